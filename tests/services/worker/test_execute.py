"""A call at its upstream, against the stand-in's real faults: what each way of failing means for the caller,
and that a call not safe to run twice is sent again only where it never reached the upstream."""

import asyncio

import orjson
import pytest

from services.worker.execute import Executor
from services.worker.relays import Relays
from shared import errors
from shared.lifecycle import Background
from shared.messages import ReplyKind
from tests.conftest import StandIn
from tests.services.worker.conftest import NS, WORKER, Bench

pytestmark = pytest.mark.anyio

DELETE = {"resourceType": "configmaps", "name": "web-config", "namespace": "org-acme"}


def _deadline(seconds: float = 10) -> float:
    return asyncio.get_running_loop().time() + seconds


def _error(outcome: tuple[ReplyKind, bytes]) -> dict[str, object]:
    kind, body = outcome
    assert kind is ReplyKind.ERROR, body
    error: dict[str, object] = orjson.loads(body)
    return error


@pytest.fixture
def executor(bench: Bench) -> Executor:
    return Executor(Relays(bench.outbox, WORKER), Background(), bench.dispatcher.agents)


async def test_a_read_only_call_whose_connection_dropped_is_sent_again(
    bench: Bench, k8s: StandIn, executor: Executor
) -> None:
    k8s.fault(action="drop_connection", tool="get", count=1)
    kind, body = await executor.execute(bench.upstream(k8s), bench.call("k8s", "get", NS), _deadline())
    assert kind is ReplyKind.RESULT and orjson.loads(body)["isError"] is False
    assert k8s.stats()["requests"]["POST fault drop_connection"] >= 1


async def test_a_destructive_call_whose_connection_dropped_is_outcome_unknown_and_not_sent_again(
    bench: Bench, k8s: StandIn, executor: Executor
) -> None:
    k8s.fault(action="drop_connection", tool="delete", count=1)
    before = k8s.stats()["tools"].get("delete", 0)
    call = bench.call("k8s", "delete", DELETE, safe=False)
    outcome = await executor.execute(bench.upstream(k8s), call, _deadline())
    assert _error(outcome)["code"] == errors.OUTCOME_UNKNOWN
    assert k8s.stats()["tools"].get("delete", 0) == before  # the fault broke it before the tool ran; one send


async def test_a_busy_upstream_makes_the_call_unavailable_for_as_long_as_it_says(
    bench: Bench, k8s: StandIn, executor: Executor
) -> None:
    k8s.fault(action="rate_limit", method="tools/call", seconds=7, count=1)
    error = _error(await executor.execute(bench.upstream(k8s), bench.call("k8s", "get", NS), _deadline()))
    assert error["code"] == errors.UPSTREAM_UNAVAILABLE and error["data"] == {"retryAfter": 7.0}


async def test_another_http_status_is_reported_with_it_and_the_retry_hint_from_settings(
    bench: Bench, k8s: StandIn, executor: Executor
) -> None:
    k8s.fault(action="http_status", method="tools/call", status=500, body="boom", count=1)
    error = _error(await executor.execute(bench.upstream(k8s), bench.call("k8s", "get", NS), _deadline()))
    assert error["code"] == errors.UPSTREAM_UNAVAILABLE
    assert error["data"] == {"status": 500, "retryAfter": executor.retry_after}


async def test_a_session_the_upstream_forgot_is_opened_again_for_the_same_call(
    bench: Bench, k8s: StandIn, executor: Executor
) -> None:
    upstream = bench.upstream(k8s)
    assert (await executor.execute(upstream, bench.call("k8s", "get", NS), _deadline()))[0] is ReplyKind.RESULT
    opened = k8s.stats()["sessions"]
    k8s.fault(action="session_reject", method="tools/call", count=1)
    assert (await executor.execute(upstream, bench.call("k8s", "get", NS), _deadline()))[0] is ReplyKind.RESULT
    assert k8s.stats()["sessions"] == opened + 1


async def test_an_upstream_slower_than_the_deadline_is_told_to_stop(
    bench: Bench, k8s: StandIn, executor: Executor
) -> None:
    k8s.fault(action="delay", tool="cluster_health", seconds=2, count=1)
    notified = k8s.stats()["cancelled"].get("notification", 0)
    outcome = await executor.execute(bench.upstream(k8s), bench.call("k8s", "cluster_health", {}), _deadline(1))
    assert _error(outcome)["code"] == errors.DEADLINE_EXCEEDED
    await executor.background.wait(5)
    assert k8s.stats()["cancelled"].get("notification", 0) == notified + 1
