"""Every kind of bad input gets its exact error, and the ingress keeps serving."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import HEADERS, Muster, initialize, make_muster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.standin("alpha")
        m.discovery()
        m.worker()
        m.ingress(MUSTER_INGRESS_MAX_BODY_BYTES="4096")
        m.wait_tools(6)
        yield m


@pytest.fixture(scope="module")
def session(muster: Muster) -> str:
    return initialize(muster.url())


def post(muster: Muster, body: Any, session: str | None = None, **headers: str) -> httpx.Response:
    h = {**HEADERS, **headers}
    if session is not None:
        h["Mcp-Session-Id"] = session
    if isinstance(body, (bytes, str)):
        return httpx.post(muster.url(), content=body, headers=h)
    return httpx.post(muster.url(), json=body, headers=h)


def rpc(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["jsonrpc"] == "2.0" and "result" not in body
    found: dict[str, Any] = body["error"]
    return found


def test_malformed_json_is_a_parse_error(muster: Muster, session: str) -> None:
    response = post(muster, b'{"jsonrpc": "2.0", "id": 1, "method": ', session)
    assert response.status_code == 400
    assert error(response)["code"] == -32700
    assert error(response)["message"].startswith("Parse error")
    assert response.json()["id"] is None


def test_a_message_that_is_not_json_rpc_is_an_invalid_request(muster: Muster, session: str) -> None:
    for body, message in [
        ({"id": 1, "method": "ping"}, "Invalid Request: not a JSON-RPC 2.0 message"),
        ([rpc("ping")], "Invalid Request: batches are not supported"),
        ("42", "Invalid Request: not a JSON-RPC 2.0 message"),
        ({"jsonrpc": "2.0", "id": 1}, "Invalid Request: no method"),
        ({"jsonrpc": "2.0", "id": 1, "method": 7}, "Invalid Request: method must be a string"),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, "Invalid Request: id must be a string or an integer"),
    ]:
        response = post(muster, body, session)
        assert response.status_code == 400, body
        assert error(response) == {"code": -32600, "message": message}


def test_an_unknown_method_is_method_not_found(muster: Muster, session: str) -> None:
    response = post(muster, rpc("tools/frobnicate", {}), session)
    assert response.status_code == 200
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32601, "message": "Method not found: tools/frobnicate"},
    }


def test_wrong_params_are_invalid_params(muster: Muster, session: str) -> None:
    cases = [
        (rpc("tools/call", {"arguments": {}}), "Invalid params: tools/call requires params.name, a non-empty string"),
        (rpc("tools/call", ["x_alpha_get"]), "Invalid params: tools/call requires params, an object"),
        (
            rpc("tools/call", {"name": "x_alpha_get", "arguments": [1]}),
            "Invalid params: params.arguments must be an object",
        ),
        (rpc("prompts/get", {"name": 5}), "Invalid params: prompts/get requires params.name, a non-empty string"),
        (
            rpc("logging/setLevel", {"level": "loud"}),
            "Invalid params: level must be one of debug, info, notice, warning, error, critical, alert, emergency",
        ),
        (rpc("initialize", {"capabilities": {}}), "Invalid params: initialize requires params.protocolVersion"),
    ]
    for body, message in cases:
        response = post(muster, body, session)
        assert response.status_code == 200
        assert error(response) == {"code": -32602, "message": message}, body


def test_an_unknown_tool_is_invalid_params_naming_the_tool(muster: Muster, session: str) -> None:
    response = post(muster, rpc("tools/call", {"name": "x_alpha_nope", "arguments": {}}, id="abc"), session)
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": "abc",
        "error": {"code": -32602, "message": "Unknown tool: x_alpha_nope"},
    }


def test_an_unknown_resource_is_resource_not_found(muster: Muster, session: str) -> None:
    response = post(muster, rpc("resources/read", {"uri": "k8s://nothing"}), session)
    assert error(response) == {"code": -32002, "message": "Resource not found", "data": {"uri": "k8s://nothing"}}


def test_an_oversize_body_is_413_whether_announced_or_streamed(muster: Muster, session: str) -> None:
    big = rpc("tools/call", {"name": "x_alpha_get", "arguments": {"name": "x" * 5000, "resourceType": "pods"}})
    response = post(muster, big, session)
    assert response.status_code == 413
    assert error(response) == {"code": -32600, "message": "Payload Too Large: the limit is 4096 bytes"}

    def chunks() -> Any:  # no Content-Length: the limit must hold while reading
        yield b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}'

    response = httpx.post(muster.url(), content=chunks(), headers={**HEADERS, "Mcp-Session-Id": session})
    assert response.status_code == 413


def test_a_missing_session_id_is_400_and_an_unknown_one_404(muster: Muster) -> None:
    response = post(muster, rpc("tools/list"))
    assert response.status_code == 400
    assert error(response) == {"code": -32600, "message": "Bad Request: Missing session ID"}
    response = post(muster, rpc("tools/list"), "0123456789abcdef0123456789abcdef")
    assert response.status_code == 404
    assert error(response) == {"code": -32600, "message": "Session not found"}


def test_a_deleted_session_is_unknown_afterwards(muster: Muster) -> None:
    session = initialize(muster.url())
    assert post(muster, rpc("ping"), session).status_code == 200
    assert httpx.delete(muster.url(), headers={"Mcp-Session-Id": session}).status_code == 200
    assert post(muster, rpc("ping"), session).status_code == 404


def test_wrong_media_types_are_refused(muster: Muster, session: str) -> None:
    response = post(muster, rpc("ping"), session, **{"Content-Type": "text/plain"})
    assert response.status_code == 415
    response = post(muster, rpc("ping"), session, Accept="text/html")
    assert response.status_code == 406
    response = httpx.get(muster.url(), headers={"Mcp-Session-Id": session, "Accept": "application/json"})
    assert response.status_code == 406


def test_an_unsupported_protocol_version_header_is_400(muster: Muster, session: str) -> None:
    response = post(muster, rpc("ping"), session, **{"MCP-Protocol-Version": "1999-01-01"})
    assert response.status_code == 400
    assert error(response)["message"].startswith("Bad Request: Unsupported protocol version: 1999-01-01")


def test_foreign_hosts_and_origins_are_refused_and_loopback_ones_let_in(muster: Muster, session: str) -> None:
    assert post(muster, rpc("ping"), session, Host="evil.example.com").status_code == 421
    assert post(muster, rpc("ping"), session, Origin="https://evil.example.com").status_code == 403
    assert post(muster, rpc("ping"), session, Origin="http://localhost:3000").status_code == 200
    assert post(muster, rpc("ping"), session, Host="localhost:9999").status_code == 200


def test_other_http_methods_are_405(muster: Muster) -> None:
    response = httpx.put(muster.url(), content=b"{}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, DELETE"


def test_the_ingress_still_serves_after_all_of_it(muster: Muster, session: str) -> None:
    response = post(
        muster,
        rpc("tools/call", {"name": "x_alpha_get", "arguments": {"resourceType": "namespaces", "name": "default"}}),
        session,
    )
    assert response.status_code == 200
    assert response.json()["result"]["isError"] is False
    assert httpx.get(muster.url().replace("/mcp", "/readyz")).json()["status"] == "ok"


def test_notifications_are_accepted_with_202(muster: Muster, session: str) -> None:
    response = post(muster, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    assert response.status_code == 202 and response.content == b""


def is_json_rpc(response: httpx.Response) -> dict[str, Any]:
    """Whatever the input, the answer is one JSON-RPC message (never a bare 500)."""
    assert response.status_code in (200, 400), response.text[:300]
    message: dict[str, Any] = response.json()
    assert message["jsonrpc"] == "2.0" and ("result" in message) != ("error" in message)
    return message


@pytest.mark.parametrize("depth", [254, 255, 600, 1019, 1021, 1100])
def test_deep_nesting_in_arguments_meta_and_client_info_gets_json_rpc_answers(
    muster: Muster, session: str, depth: int
) -> None:
    deep = "[" * depth + "]" * depth
    answers = [
        post(
            muster,
            f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x_alpha_get",'
            f'"arguments":{{"deep":{deep}}}}}}}',
            session,
        ),
        post(
            muster,
            f'{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"x_alpha_get",'
            f'"arguments":{{}},"_meta":{{"deep":{deep}}}}}}}',
            session,
        ),
        post(
            muster,
            f'{{"jsonrpc":"2.0","id":3,"method":"initialize","params":{{"protocolVersion":"2025-11-25",'
            f'"capabilities":{{}},"clientInfo":{{"name":"deep","deep":{deep}}}}}}}',
        ),
        post(muster, f'{{"jsonrpc":"2.0","id":4,"method":"ping","params":{{"_meta":{{"deep":{deep}}}}}}}', session),
    ]
    for answer in answers:
        message = is_json_rpc(answer)
        if depth + 3 > 1024:  # beyond what orjson (and so muster) decodes: a parse error, said as one
            assert message["error"]["code"] == -32700 and answer.status_code == 400
    if depth + 3 <= 1024:
        assert "mcp-session-id" in answers[2].headers  # stored as sent, whatever its depth


def test_deep_nesting_in_a_per_request_envelope_gets_a_json_rpc_answer(muster: Muster) -> None:
    deep = "[" * 600 + "]" * 600
    body = (
        '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{'
        '"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
        f'"io.modelcontextprotocol/clientCapabilities":{{"deep":{deep}}},"deep":{deep}}}}}}}'
    )
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}
    assert "result" in is_json_rpc(post(muster, body, None, **headers))


def test_logging_set_level_with_a_list_or_an_object_is_invalid_params(muster: Muster, session: str) -> None:
    for level in (["debug"], {"level": "debug"}, 7, None):
        response = post(muster, rpc("logging/setLevel", {"level": level}), session)
        assert error(response)["code"] == -32602
    assert error(post(muster, rpc("logging/setLevel", ["debug"]), session))["code"] == -32602


def test_wrong_types_in_each_field_get_json_rpc_errors(muster: Muster, session: str) -> None:
    bodies: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
        {"jsonrpc": "2.0", "id": [1], "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": ["a"]}},
        {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": {"a": 1}}},
        {"jsonrpc": "2.0", "id": 1, "method": "completion/complete", "params": {"ref": []}},
        {"jsonrpc": "2.0", "id": 1, "method": "notifications/cancelled", "params": {"requestId": {}}},
        {"jsonrpc": 2, "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": "r", "result": [], "error": None},
    ]
    for body in bodies:
        response = post(muster, body, session)
        if response.status_code != 202:
            is_json_rpc(response)


def test_lone_surrogates_in_names_are_named_back_in_the_error(muster: Muster, session: str) -> None:
    unknown = post(muster, b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}', session)
    assert unknown.status_code == 200 and unknown.content == (
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found: \\ud800"}}'
    )
    tool = post(muster, b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"\\udfff"}}', session)
    assert error(tool) == {"code": -32602, "message": "Unknown tool: \udfff"}
