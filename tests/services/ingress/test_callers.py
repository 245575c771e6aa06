"""A handshake session and a per-request client, each answering for itself."""

import orjson

from services.ingress.callers import NO_LOGS, Envelope, Session


def test_a_session_names_its_calls_by_its_id_and_the_client_s_request_id() -> None:
    session = Session("abc", "2025-11-25", {}, "anonymous")
    assert session.call_key(b'"r-1"', b"replica", b"7") == b'abc "r-1"'
    assert session.session_id == b"abc"
    envelope = Envelope("2026-07-28", {}, "anonymous")
    assert envelope.call_key(b'"r-1"', b"replica", b"7") == b"~replica/7"
    assert envelope.session_id == b"" and envelope.level == NO_LOGS


def test_a_per_request_client_gets_results_that_say_their_kind() -> None:
    envelope = Envelope("2026-07-28", {}, "anonymous")
    assert orjson.loads(envelope.result("tools/call", b'{"content":[]}')) == {"resultType": "complete", "content": []}
    assert orjson.loads(envelope.result("tools/list", b"{}")) == {
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
    }
    assert Session("abc", "2025-11-25", {}, "anonymous").result("tools/call", b"{}") == b"{}"


def test_only_a_session_that_declared_the_capability_and_streams_can_be_asked() -> None:
    session = Session("abc", "2025-11-25", {"roots": {}}, "anonymous")
    assert session.cannot_ask(True, "roots") is None
    assert session.cannot_ask(True, "sampling") == "the client did not declare the sampling capability"
    assert session.cannot_ask(False, "roots") == "the client does not accept an event stream, so it cannot be asked"
    assert "per-request" in (Envelope("2026-07-28", {"roots": {}}, "anonymous").cannot_ask(True, "roots") or "")


def test_the_envelope_is_taken_off_for_an_upstream_of_the_handshake_era() -> None:
    params = {"name": "t", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "progressToken": 3}}
    assert Envelope("2026-07-28", {}, "anonymous").upstream_params(params) == {
        "name": "t",
        "_meta": {"progressToken": 3},
    }
    only_envelope = {"name": "t", "_meta": {"io.modelcontextprotocol/clientCapabilities": {}}}
    assert Envelope("2026-07-28", {}, "anonymous").upstream_params(only_envelope) == {"name": "t"}
    assert Session("abc", "2025-11-25", {}, "anonymous").upstream_params(params) is params
