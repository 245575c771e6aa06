"""A handshake session and a per-request client, each answering for itself."""

import orjson

from services.ingress.callers import NO_LOGS, Envelope, Session
from shared.rawjson import Document


def test_a_session_names_its_calls_by_its_id_and_the_client_s_request_id() -> None:
    session = Session("abc", "2025-11-25", {}, "anonymous")
    assert session.call_key(b'"r-1"', b"replica", b"7") == b'abc "r-1"'
    assert session.call_key(b'"r\\u002d1"', b"replica", b"7") == b'abc "r-1"'  # one spelling for one id
    assert session.call_key(b"1180591620717411303424", b"", b"") == b"abc 1180591620717411303424"
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
    envelope = Envelope("2026-07-28", {"roots": {}}, "anonymous")
    assert envelope.cannot_ask(True, "roots", "roots/list") is None  # asked with an input_required result
    assert envelope.cannot_ask(True, "sampling", "sampling/createMessage") == (
        "the client did not declare the sampling capability"
    )
    assert "per-request" in (envelope.cannot_ask(True, None, "ping") or "")


def _stripped(params: bytes) -> bytes:
    stripped = Envelope("2026-07-28", {}, "anonymous").upstream_params(Document.parse(params))
    assert stripped is not None and orjson.loads(stripped.data) == stripped.value
    return stripped.data


def test_the_envelope_is_taken_off_for_an_upstream_of_the_handshake_era_and_nothing_else_changes() -> None:
    params = (
        b'{"name": "t", "arguments": {"n": 1180591620717411303424, "x": -0.0},'
        b' "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "progressToken": 3}}'
    )
    assert _stripped(params) == (
        b'{"name": "t", "arguments": {"n": 1180591620717411303424, "x": -0.0}, "_meta": {"progressToken": 3}}'
    )
    assert _stripped(b'{"name":"t","_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}') == b'{"name":"t"}'
    untouched = Document.parse(params)
    assert Session("abc", "2025-11-25", {}, "anonymous").upstream_params(untouched) is untouched
    plain = Document.parse(b'{"name": "t", "_meta": {"progressToken": 3}}')
    assert Envelope("2026-07-28", {}, "anonymous").upstream_params(plain) is plain
