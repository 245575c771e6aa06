import re

import pytest

from shared.tracecontext import TraceParent, incoming

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_read_field_by_field_and_written_back_the_same() -> None:
    parent = TraceParent.parse(VALID)
    assert parent is not None
    assert parent == TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    assert parent.sampled and parent.header() == VALID.encode() and str(parent) == VALID
    assert TraceParent.parse(VALID.encode()) == parent


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        VALID[:-1],
        VALID + "-extra",  # version 00 has exactly four fields
        VALID.upper(),  # lowercase hex only
        "ff" + VALID[2:],  # version ff is invalid
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    ],
)
def test_anything_else_is_no_trace_context(value: str | None) -> None:
    assert TraceParent.parse(value) is None


def test_a_newer_version_is_read_by_its_first_four_fields() -> None:
    assert TraceParent.parse("01" + VALID[2:] + "-whatever") == TraceParent.parse(VALID)


def test_a_span_continues_its_parent_s_trace_or_starts_a_new_one() -> None:
    parent = TraceParent.parse(VALID)
    assert parent is not None
    child = TraceParent.continue_from(parent)
    assert (child.trace_id, child.flags) == (parent.trace_id, parent.flags) and child.span_id != parent.span_id
    root = TraceParent.continue_from(None)
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", str(root)) and not root.sampled
    assert TraceParent.parse(root.header()) == root
    assert len({TraceParent.new().trace_id for _ in range(1000)}) == 1000


def test_an_agent_s_trace_context_is_found_in_meta_first_then_in_the_header() -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-00"
    headers = [(b"content-type", b"application/json"), (b"traceparent", other.encode())]
    assert incoming({"name": "x", "_meta": {"traceparent": VALID}}, headers) == TraceParent.parse(VALID)
    assert incoming({"name": "x"}, headers) == TraceParent.parse(other)
    assert incoming({"_meta": {"traceparent": "garbage"}}, headers) == TraceParent.parse(other)
    assert incoming(None, [(b"traceparent", b"garbage")]) is None
    assert incoming([], []) is None
