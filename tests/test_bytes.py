"""Payloads pass through muster as bytes, both ways: what the agent sends reaches the upstream, and what the
upstream answers reaches the agent, byte for byte wherever muster need not change them (the exposed tool name is
replaced by the upstream's; a 2026-07-28 result gets its resultType first). The upstream is hand-written
(tests/fixtures/raw_server.py) so that it can send what no SDK writes: 2**70, 10**400, 1e-400, -0.0, escapes,
duplicate keys, odd key order and whitespace."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import HEADERS, Muster, initialize, make_muster
from tests.fixtures.raw_server import ODD, ODD_DATA, ODD_RESULT

pytestmark = pytest.mark.slow

BIG_ID = b"1180591620717411303424"  # 2**70


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.raw_server()
        m.discovery(prefix_mode="always")
        m.worker()
        m.ingress()
        m.wait_tools({"x_raw_echo", "x_raw_odd"})
        yield m


@pytest.fixture(scope="module")
def session(muster: Muster) -> str:
    return initialize(muster.url())


def post(muster: Muster, body: bytes, session: str | None, **headers: str) -> httpx.Response:
    h = {**HEADERS, **headers}
    if session is not None:
        h["Mcp-Session-Id"] = session
    return httpx.post(muster.url(), content=body, headers=h, timeout=30)


def last_params(muster: Muster) -> bytes:
    return httpx.get(f"http://127.0.0.1:{muster.standins['raw'].port}/_raw/last").content


def call(request_id: bytes, params: bytes) -> bytes:
    return b'{"jsonrpc": "2.0", "id": ' + request_id + b', "method": "tools/call", "params": ' + params + b"}"


def test_arguments_reach_the_upstream_byte_for_byte_with_only_the_tool_name_replaced(
    muster: Muster, session: str
) -> None:
    params = b'{ "name" : "x_raw_echo",\n  "arguments": ' + ODD + b', "_meta": {"progressToken": "\\u0070"} }'
    response = post(muster, call(b"7", params), session)
    assert last_params(muster) == params.replace(b'"x_raw_echo"', b'"echo"')
    # and back again: the upstream echoes the arguments as its structuredContent
    echoed = b'{"content":[{"type":"text","text":"echoed"}],"structuredContent":' + ODD + b"}"
    assert response.content == b'{"jsonrpc":"2.0","id":7,"result":' + echoed + b"}"


def test_a_result_reaches_the_agent_byte_for_byte_with_the_id_as_the_agent_wrote_it(
    muster: Muster, session: str
) -> None:
    response = post(muster, call(b'"r\\u0031"', b'{"name": "x_raw_odd", "arguments": {}}'), session)
    assert response.content == b'{"jsonrpc":"2.0","id":"r\\u0031","result":' + ODD_RESULT + b"}"


def test_an_upstream_error_reaches_the_agent_byte_for_byte(muster: Muster, session: str) -> None:
    response = post(muster, call(b"9", b'{"name": "x_raw_fail", "arguments": {}}'), session)
    error = b'{"code": -32000, "message": "failed \\u2014 oddly", "data": ' + ODD_DATA + b"}"
    assert response.content == b'{"jsonrpc":"2.0","id":9,"error":' + error + b"}"


def test_notifications_and_the_result_on_an_event_stream_arrive_byte_for_byte(muster: Muster, session: str) -> None:
    params = (
        b'{"name": "x_raw_steps", "arguments": {"pause": 0.05}, "_meta": {"progressToken": 1180591620717411303424}}'
    )
    response = post(muster, call(b"10", params), session)
    assert response.headers["content-type"].startswith("text/event-stream")
    data = [line[6:] for line in response.content.split(b"\n") if line.startswith(b"data: ")]
    note = (
        b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1180591620717411303424,'
        b'"progress":%d,"total":2,"message":"step \\u003%d","_meta":{"n":-0.0}}}'
    )
    assert data == [
        note % (1, 1),
        note % (2, 2),
        b'{"jsonrpc":"2.0","id":10,"result":' + ODD_RESULT.replace(b"\n", b"") + b"}",
    ]


def test_a_request_id_of_2_to_the_70_is_accepted_and_echoed_exactly(muster: Muster, session: str) -> None:
    ping = post(muster, b'{"jsonrpc": "2.0", "id": ' + BIG_ID + b', "method": "ping"}', session)
    assert ping.content == b'{"jsonrpc":"2.0","id":' + BIG_ID + b',"result":{}}'
    odd = post(muster, call(BIG_ID, b'{"name": "x_raw_odd"}'), session)
    assert odd.content == b'{"jsonrpc":"2.0","id":' + BIG_ID + b',"result":' + ODD_RESULT + b"}"


def test_a_per_request_client_gets_the_same_bytes_after_its_result_kind(muster: Muster) -> None:
    envelope = (
        b'"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}'
    )
    params = b'{"name": "x_raw_echo", "arguments": ' + ODD + b', "_meta": {' + envelope + b', "k": -0}}'
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "x_raw_echo"}
    response = post(muster, call(b"11", params), None, **headers)
    assert last_params(muster) == b'{"name": "echo", "arguments": ' + ODD + b', "_meta": {"k": -0}}'
    echoed = b'"content":[{"type":"text","text":"echoed"}],"structuredContent":' + ODD + b"}"
    assert response.content == b'{"jsonrpc":"2.0","id":11,"result":{"resultType":"complete",' + echoed + b"}"
    odd = post(
        muster, call(b"12", params.replace(b"x_raw_echo", b"x_raw_odd")), None, **{**headers, "Mcp-Name": "x_raw_odd"}
    )
    inside = ODD_RESULT[ODD_RESULT.index(b'"content"') :]
    assert odd.content == b'{"jsonrpc":"2.0","id":12,"result":{"resultType":"complete",' + inside + b"}"
