import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.ingress.callers import Envelope, Session
from services.ingress.http import Head
from services.ingress.telemetry import QUEUE_FULL, Telemetry, notification_method
from shared import errors, logs
from shared.instruments import IngressInstruments
from shared.labels import LabelBounds
from shared.logs import JsonFormatter, PrincipalHasher
from shared.messages import CallReply, CallStats, ReplyKind
from shared.metrics import Metrics
from shared.tracing import Tracing

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass(frozen=True)
class Entry:
    name: str
    prefix: str
    tools: list[dict[str, Any]]
    prompts: list[dict[str, Any]]


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("ingress"))
    logger = logging.getLogger("services.ingress.telemetry")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)


def telemetry(*, metrics_on: bool = True, log_on: bool = True) -> tuple[Metrics, Telemetry]:
    metrics, bounds = Metrics("ingress"), LabelBounds()
    instruments = IngressInstruments(metrics, bounds) if metrics_on else None
    if instruments is not None:
        instruments.catalog_changed([Entry("alpha", "alpha", [{"name": "get"}], [])])
    hasher = PrincipalHasher(b"k" * 32) if log_on else None
    return metrics, Telemetry(metrics, bounds, instruments, hasher, Tracing.off())


def samples(metrics: Metrics, name: str) -> dict[frozenset[tuple[str, str]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        frozenset(s.labels.items()): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and s.value
    }


def head(*headers: tuple[bytes, bytes]) -> Head:
    return Head({"method": "POST", "headers": [(b"content-type", b"application/json"), *headers]})


SESSION = Session("0123456789abcdef0123456789abcdef", "2025-11-25", {}, "alice@example.com")
PARAMS = {"name": "x_alpha_get", "arguments": {}}


def test_a_notification_s_method_is_found_without_parsing_it() -> None:
    assert notification_method(b'{"jsonrpc":"2.0","method":"notifications/progress","params":{}}') == (
        "notifications/progress"
    )
    assert notification_method(b'{"jsonrpc":"2.0"}') == "_OTHER"


def test_a_call_is_counted_and_logged_once_under_its_trace_id(lines: io.StringIO) -> None:
    metrics, t = telemetry()
    span = t.begin(head(), SESSION, "tools/call", {**PARAMS, "_meta": {"traceparent": TRACEPARENT}}, "alpha", "get")
    assert span.trace.trace_id == TRACEPARENT[3:35] and span.trace.span_id != TRACEPARENT[36:52]
    assert logs.request_id.get() == span.trace.trace_id  # every line about the call carries it
    t.finished(span, CallReply(b"1", ReplyKind.RESULT, b"{}", stats=CallStats(1500, 12_000, True)))
    assert logs.request_id.get() is None
    calls = samples(metrics, "muster_calls_total")
    assert calls == {
        frozenset({("server", "alpha"), ("tool", "get"), ("method", "tools/call"), ("outcome", "tool_error")}): 1.0
    }
    (line,) = [orjson.loads(x) for x in lines.getvalue().splitlines()]
    assert line["msg"] == "call" and line["request_id"] == span.trace.trace_id and line["span_id"] == span.trace.span_id
    assert (line["session"], line["tool"], line["outcome"]) == ("01234567", "get", "tool_error")
    assert (line["queue_ms"], line["upstream_ms"]) == (1.5, 12.0) and line["total_ms"] >= 0
    assert line["principal"] == PrincipalHasher(b"k" * 32)("alice@example.com") and "alice" not in str(line)


def test_a_refused_call_counts_as_rejected_with_its_reason_and_one_that_lost_its_caller_as_cancelled(
    lines: io.StringIO,
) -> None:
    metrics, t = telemetry()
    caller = Envelope("2026-07-28", {}, "anonymous")
    t.refused(t.begin(head(), caller, "tools/call", PARAMS, "alpha", "get"), errors.QueueFull("full", 1), QUEUE_FULL)
    t.finished(t.begin(head(), caller, "tools/call", PARAMS, "alpha", "get"), None)
    error = CallReply(b"3", ReplyKind.ERROR, errors.DeadlineExceeded("late").body(), stats=CallStats(5))
    t.finished(t.begin(head(), caller, "tools/call", PARAMS, "alpha", "get"), error)
    outcomes = {dict(k)["outcome"]: v for k, v in samples(metrics, "muster_calls_total").items()}
    assert outcomes == {"rejected": 1.0, "cancelled": 1.0, "deadline": 1.0}
    assert samples(metrics, "muster_rejections_total") == {
        frozenset({("server", "alpha"), ("reason", "queue_full")}): 1
    }
    logged = [orjson.loads(x) for x in lines.getvalue().splitlines()]
    assert [(x["outcome"], "queue_ms" in x, "upstream_ms" in x, x["session"]) for x in logged] == [
        ("rejected", False, False, ""),
        ("cancelled", False, False, ""),
        ("deadline", True, False, ""),
    ]


def test_a_trace_context_in_the_header_is_continued_and_without_one_a_trace_begins() -> None:
    _, t = telemetry()
    from_header = t.begin(head((b"traceparent", TRACEPARENT.encode())), SESSION, "tools/call", PARAMS, "alpha", "get")
    assert from_header.trace.trace_id == TRACEPARENT[3:35] and from_header.trace.flags == "01"
    t.finished(from_header, None)
    fresh = t.begin(head(), SESSION, "tools/call", PARAMS, "alpha", "get")
    assert fresh.trace.trace_id != TRACEPARENT[3:35] and fresh.trace.flags == "00"
    t.finished(fresh, None)


def test_with_the_per_call_telemetry_off_nothing_is_counted_or_logged(lines: io.StringIO) -> None:
    metrics, t = telemetry(metrics_on=False, log_on=False)
    t.finished(t.begin(head(), SESSION, "tools/call", PARAMS, "alpha", "get"), None)
    t.answered("tools/list", SESSION, None, None, 0.0)
    assert samples(metrics, "muster_calls_total") == {} and lines.getvalue() == ""
    assert samples(metrics, "mcp_server_operation_duration_seconds_count") == {}
    assert logs.request_id.get() is None


def test_requests_answered_by_the_ingress_are_timed_with_their_method_and_error() -> None:
    metrics, t = telemetry()
    t.answered("tools/list", SESSION, None, None, 0.0)
    t.answered("initialize", None, {"protocolVersion": "2025-06-18"}, None, 0.0)
    t.answered("tools/call", SESSION, {"name": "nope"}, errors.INVALID_PARAMS, 0.0)
    counts = samples(metrics, "mcp_server_operation_duration_seconds_count")
    assert {(dict(k)["mcp_method_name"], dict(k)["error_type"], dict(k)["mcp_protocol_version"]) for k in counts} == {
        ("tools/list", "", "2025-11-25"),
        ("initialize", "", "2025-06-18"),
        ("tools/call", "-32602", "2025-11-25"),
    }
    t.notified(b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}')
    t.notified(b'{"jsonrpc":"2.0","method":"made/up"}')
    assert samples(metrics, "muster_notifications_sent_total") == {
        frozenset({("method", "notifications/tools/list_changed")}): 1.0,
        frozenset({("method", "_OTHER")}): 1.0,
    }


def per_call_microseconds(rounds: int = 5, calls: int = 5_000) -> tuple[float, float]:
    """The best of `rounds` runs of begin + finished, with metrics and the log line (the service's own log setup,
    to /dev/null) and with both off: what a routed call costs the ingress's telemetry, and what it costs without."""
    root = logging.getLogger()
    saved, stderr, state = (root.handlers[:], root.level), sys.stderr, (logs._fast, logs._text)
    reply = CallReply(b"1", ReplyKind.RESULT, b'{"content":[]}', stats=CallStats(400, 3000))
    best = {True: float("inf"), False: float("inf")}
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        try:
            logs.configure("ingress")
            for _ in range(rounds):
                for on in (True, False):
                    _, t = telemetry(metrics_on=on, log_on=on)
                    h = head((b"accept", b"application/json, text/event-stream"), (b"mcp-session-id", b"x" * 32))
                    start = time.process_time()  # CPU time: what other processes on the machine do is not counted
                    for _ in range(calls):
                        t.finished(t.begin(h, SESSION, "tools/call", PARAMS, "alpha", "get"), reply)
                    best[on] = min(best[on], (time.process_time() - start) / calls * 1e6)
        finally:
            sys.stderr = stderr
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
            logs._fast, logs._text = state
    return best[True], best[False]


def test_the_per_call_telemetry_costs_the_ingress_microseconds() -> None:
    on, off = per_call_microseconds()
    print(f"ingress per call: {on:.1f} µs with metrics and the log line, {off:.1f} µs without")
    # The budget is +50 µs of CPU per call for ingress and worker together (issue 10), which `make bench` measures
    # in the running services; on this shared 2-core machine this loop measures 15-50 µs, depending on its load.
    # The bound catches a change that costs a multiple of that (the logging module's way cost 200 µs here).
    assert on - off < 100


if __name__ == "__main__":
    on, off = per_call_microseconds(rounds=10, calls=20_000)
    print(f"ingress per call: {on:.1f} µs with metrics and the log line, {off:.1f} µs without: +{on - off:.1f} µs")
