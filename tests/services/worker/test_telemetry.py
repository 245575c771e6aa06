import asyncio
import time

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.worker.telemetry import Telemetry, failure_type, is_tool_error, reaches_nothing
from shared import errors
from shared.http1 import ConnectFailed, ConnectionLost, ConnectTimeout, DeadlineTimeout
from shared.instruments import WorkerInstruments
from shared.labels import LabelBounds
from shared.messages import Call, ServerRecord
from shared.metrics import Metrics
from shared.tracing import Tracing
from shared.upstream import Outcome, SessionLost, StatusError, UpstreamFailure

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def telemetry() -> tuple[Metrics, Telemetry]:
    metrics, bounds = Metrics("worker"), LabelBounds()
    t = Telemetry(metrics, bounds, WorkerInstruments(metrics, bounds), Tracing.off())
    t.catalog_changed([ServerRecord(name="alpha", url="http://x", state="Connected", tools=[{"name": "get"}])])
    return metrics, t


def samples(metrics: Metrics, name: str) -> dict[frozenset[tuple[str, str]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        frozenset(s.labels.items()): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and s.value
    }


def value_of(metrics: Metrics, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of `name`, zeros too."""
    text = generate_latest(metrics.registry).decode()
    return {
        frozenset(s.labels.items()): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    }


def call(traceparent: bytes = TRACEPARENT) -> Call:
    return Call(
        call_id=b"1",
        replica=b"r",
        session=b"s",
        principal=b"anonymous",
        server=b"alpha",
        method=b"tools/call",
        params=b'{"name":"get"}',
        deadline_ms=0,
        safe=True,
        key=b"s 1",
        traceparent=traceparent,
        target=b"get",
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"content":[],"isError":true}', True),
        (b'{"content":[], "isError" : true}', True),
        (b'{"content":[],"isError":false}', False),
        (b'{"content":[{"type":"text","text":"\\"isError\\":true"}]}', False),  # the word in a text is not the flag
        (b'{"structuredContent":{"isError":true},"content":[]}', False),  # nor a nested key
        (b'{"content":[]}', False),
        (b'{"content":[],"isError":false,"structuredContent":{"isError":true}}', False),
        (b'{"structuredContent":{"isError":false},"isError" :\n true}', True),
    ],
)
def test_an_is_error_result_is_told_by_its_top_level_flag(body: bytes, expected: bool) -> None:
    assert is_tool_error(body) is expected


@pytest.mark.parametrize(
    ("exc", "error_type", "connect_error"),
    [
        (asyncio.CancelledError(), "-32800", False),
        (SessionLost("gone"), "http_404", False),
        (DeadlineTimeout("late"), "timeout", False),  # a slow tool, not an unreachable upstream
        (ConnectTimeout("no answer"), "timeout", True),
        (ConnectionLost("broke", reused=True, received=False), "reset", True),
        (StatusError(500, b"", None), "http_500", True),
        (UpstreamFailure("not json"), "protocol", True),
    ],
)
def test_a_failed_request_has_an_error_type_and_only_an_unreachable_upstream_counts_as_a_connect_error(
    exc: BaseException, error_type: str, connect_error: bool
) -> None:
    assert failure_type(exc) == error_type and reaches_nothing(exc) is connect_error


def test_a_result_that_says_is_error_false_is_not_parsed_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(data: bytes) -> object:
        raise AssertionError("parsed")

    monkeypatch.setattr("services.worker.telemetry.orjson.loads", refuse)
    big = b'{"content":[{"type":"text","text":"' + b"x" * 1_000_000 + b'"}],"isError": false}'
    assert is_tool_error(big) is False


def test_a_refused_connection_is_classed_by_its_cause() -> None:
    try:
        raise ConnectFailed("cannot connect") from ConnectionRefusedError()
    except ConnectFailed as exc:
        assert failure_type(exc) == "refused" and reaches_nothing(exc)


def test_a_call_s_queue_wait_comes_from_its_entry_id_and_it_counts_as_running_until_it_stops() -> None:
    metrics, t = telemetry()
    entry_id = b"%d-0" % int((time.time() - 0.25) * 1000)
    clock = t.started("alpha", entry_id)
    assert 200_000 <= clock.queue_us < 5_000_000
    assert samples(metrics, "muster_calls_in_flight") == {frozenset({("server", "alpha")}): 1.0}
    assert samples(metrics, "muster_queue_wait_seconds_count") == {frozenset({("server", "alpha")}): 1.0}
    t.stopped("alpha")
    assert value_of(metrics, "muster_calls_in_flight") == {frozenset({("server", "alpha")}): 0.0}
    assert t.started("alpha", b"%d-0" % int((time.time() + 60) * 1000)).queue_us == 0  # clocks apart: not negative


def test_a_request_carries_the_call_s_traceparent_and_is_timed_by_its_answer() -> None:
    metrics, t = telemetry()
    clock = t.started("alpha", b"%d-0" % int(time.time() * 1000))
    request = t.request("alpha", call(), b"2025-06-18", clock)
    assert request.headers == [(b"traceparent", TRACEPARENT)]
    request.answered(Outcome(False, b'{"content":[],"isError":true}'))
    error = t.request("alpha", call(), b"2025-06-18", clock)
    error.answered(Outcome(True, orjson.dumps({"code": errors.INVALID_PARAMS, "message": "no"})))
    failed = t.request("alpha", call(), b"2025-06-18", clock)
    failed.failed(StatusError(503, b"", None))
    assert clock.tool_error and clock.upstream_us >= 0 and clock.stats().tool_error
    counts = samples(metrics, "mcp_client_operation_duration_seconds_count")
    assert {dict(k)["error_type"]: v for k, v in counts.items()} == {"tool_error": 1, "-32602": 1, "http_503": 1}
    assert {dict(k)["gen_ai_tool_name"] for k in counts} == {"get"}
    assert {dict(k)["mcp_protocol_version"] for k in counts} == {"2025-06-18"}
    assert samples(metrics, "muster_upstream_connect_errors_total") == {
        frozenset({("server", "alpha"), ("class", "http_503")}): 1.0
    }
    assert t.request("alpha", call(b""), b"2025-06-18", None).headers == []  # an entry from an older ingress


def test_sessions_redeliveries_and_dead_letters_are_counted_by_server() -> None:
    metrics, t = telemetry()
    t.initialized("alpha", False)
    t.initialized("alpha", True)
    t.redelivered("alpha", 3)
    t.redelivered("alpha", 0)
    t.dead_lettered("alpha")
    t.token("refresh", "alpha", "ok")
    t.token("exchange", "alpha", "rejected")
    t.token("refresh", "alpha", "made up")
    assert {dict(k)["reason"]: v for k, v in samples(metrics, "muster_upstream_initializations_total").items()} == {
        "new": 1.0,
        "lost": 1.0,
    }
    assert samples(metrics, "muster_redeliveries_total") == {frozenset({("server", "alpha")}): 3.0}
    assert samples(metrics, "muster_dead_letters_total") == {frozenset({("server", "alpha")}): 1.0}
    assert samples(metrics, "muster_token_refreshes_total") == {
        frozenset({("server", "alpha"), ("outcome", "ok")}): 1.0,
        frozenset({("server", "alpha"), ("outcome", "_OTHER")}): 1.0,
    }
    assert samples(metrics, "muster_token_exchanges_total") == {
        frozenset({("server", "alpha"), ("outcome", "rejected")}): 1.0
    }
