"""The Dispatcher against a real valkey-server and a real upstream: each call taken from its queue gets exactly
one outcome, written with its acknowledgement; the lane bounds what runs at once; a cancellation reaches the
upstream."""

import asyncio

import anyio
import orjson
import pytest

from shared import errors
from shared.messages import ReplyKind
from tests.conftest import StandIn
from tests.services.worker.conftest import NS, Bench, error_code, wait_running

pytestmark = pytest.mark.anyio


async def test_a_call_s_outcome_leaves_with_its_acknowledgement(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    entries = await bench.enqueue(bench.call("k8s", "get", NS))
    await bench.dispatcher.take(upstream, entries)
    outcome = await bench.outcome()
    assert outcome.kind is ReplyKind.RESULT
    assert orjson.loads(outcome.body)["isError"] is False
    assert await bench.settled("k8s") == (0, 0)


async def test_the_lane_runs_no_more_calls_than_it_has_room_for(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s, concurrency=1)
    k8s.fault(action="delay", tool="describe", seconds=0.5, count=2)
    before = k8s.stats()["started"].get("describe", 0)
    entries = await bench.enqueue(*(bench.call("k8s", "describe", NS) for _ in range(2)))
    taking = asyncio.ensure_future(bench.dispatcher.take(upstream, entries))
    await wait_running(k8s, 1)
    assert k8s.stats()["started"]["describe"] == before + 1  # the second waits for the first
    assert not taking.done()  # and the reader is held back meanwhile
    with anyio.fail_after(10):
        await taking
    assert k8s.stats()["started"]["describe"] == before + 2
    replies = await bench.replies(2)
    assert [r.kind for r in replies] == [ReplyKind.RESULT, ReplyKind.RESULT]


async def test_a_cancelled_running_call_is_stopped_at_the_upstream(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    k8s.fault(action="delay", tool="cluster_health", seconds=3, count=1)
    notified = k8s.stats()["cancelled"].get("notification", 0)
    call = bench.call("k8s", "cluster_health", {})
    await bench.dispatcher.take(upstream, await bench.enqueue(call))
    await wait_running(k8s, 1)
    bench.dispatcher.cancel(call.key)
    outcome = await bench.outcome(seconds=5)
    assert error_code(outcome) == errors.CANCELLED
    with anyio.fail_after(5):
        while k8s.stats()["cancelled"].get("notification", 0) == notified:
            await anyio.sleep(0.02)
    assert await bench.settled("k8s") == (0, 0)


async def test_a_call_cancelled_before_it_runs_never_reaches_the_upstream(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    before = k8s.stats()["tools"].get("get", 0)
    call = bench.call("k8s", "get", NS)
    bench.dispatcher.cancel(call.key)
    await bench.dispatcher.take(upstream, await bench.enqueue(call))
    outcome = await bench.outcome()
    assert error_code(outcome) == errors.CANCELLED and b"before it ran" in outcome.body
    assert k8s.stats()["tools"].get("get", 0) == before


async def test_a_call_whose_deadline_passed_in_the_queue_is_answered_without_running(
    bench: Bench, k8s: StandIn
) -> None:
    upstream = bench.upstream(k8s)
    before = k8s.stats()["tools"].get("get", 0)
    call = bench.call("k8s", "get", NS, deadline_ms=1)
    await bench.dispatcher.take(upstream, await bench.enqueue(call))
    assert error_code(await bench.outcome()) == errors.DEADLINE_EXCEEDED
    assert k8s.stats()["tools"].get("get", 0) == before
    assert await bench.settled("k8s") == (0, 0)


async def test_a_malformed_entry_is_dropped_and_the_next_one_still_runs(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s, concurrency=1)
    entries = await bench.enqueue(bench.call("k8s", "get", NS), bench.call("k8s", "get", NS))
    broken = (entries[0][0], {k: v for k, v in entries[0][1].items() if k != b"deadline"})
    await bench.dispatcher.take(upstream, [broken, entries[1]])
    assert (await bench.outcome()).kind is ReplyKind.RESULT
    assert await bench.settled("k8s") == (0, 0)  # both acknowledged, the malformed one without a reply
    assert len(await bench.replies(1)) == 1


async def test_an_upstream_that_cannot_be_reached_is_unavailable_with_a_retry_hint(bench: Bench) -> None:
    gone = StandIn("gone", 9)  # nothing listens on port 9 of 127.0.0.1
    upstream = bench.upstream(gone)
    await bench.dispatcher.take(upstream, await bench.enqueue(bench.call("gone", "get", NS)))
    outcome = await bench.outcome()
    assert error_code(outcome) == errors.UPSTREAM_UNAVAILABLE
    assert orjson.loads(outcome.body)["data"] == {"retryAfter": 5.0}
