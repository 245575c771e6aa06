"""Taking over a dead worker's calls, against a real valkey-server and upstream: run again if safe, set aside
after too many deliveries; a live worker's calls are never taken."""

from typing import Any

import anyio
import orjson
import pytest

from services.worker.reclaim import CLAIM_MIN_IDLE_MS, Reclaimer
from services.worker.upstream import Upstream
from shared import errors, streams
from shared.messages import ReplyKind
from tests.conftest import StandIn
from tests.services.worker.conftest import NS, WORKER, Bench

pytestmark = pytest.mark.anyio


def _reclaimer(bench: Bench, upstream: Upstream, max_deliveries: int = 3) -> Reclaimer:
    return Reclaimer(
        bench.valkey,
        bench.dispatcher,
        lambda: [upstream],
        worker_id=WORKER,
        heartbeat=1,
        dead_after=1,
        interval=1,
        max_deliveries=max_deliveries,
    )


async def _idle(bench: Bench, worker: str, redeliveries: int = 0) -> None:
    """Delivers `worker`'s calls to it again `redeliveries` times, then waits until a claim may take them."""
    queue = streams.queue("k8s")
    for _ in range(redeliveries):
        await bench.valkey.xreadgroup(streams.GROUP_WORKERS, worker, {queue.stream: "0"})
    await anyio.sleep(CLAIM_MIN_IDLE_MS / 1000 + 0.1)


async def _enqueue_for(bench: Bench, worker: str, *calls: Any) -> None:
    """Enqueues calls that `worker` holds, as if it had been running them: delivered twice so far."""
    queue = streams.queue("k8s")
    await bench.enqueue(*calls)  # read by the worker under test: hand them over to the other one
    pending: Any = await bench.valkey.xpending_range(queue.stream, streams.GROUP_WORKERS, "-", "+", 100)
    ids = [row["message_id"] for row in pending]
    await bench.valkey.xclaim(queue.stream, streams.GROUP_WORKERS, worker, 0, ids)


async def test_the_calls_of_a_worker_without_heartbeat_are_run_by_another(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    await _enqueue_for(bench, "dead-worker", bench.call("k8s", "get", NS))
    await _idle(bench, "dead-worker")
    assert await _reclaimer(bench, upstream).reclaim(upstream) == 1
    assert (await bench.outcome()).kind is ReplyKind.RESULT
    assert await bench.settled("k8s") == (0, 0)


async def test_a_live_worker_s_calls_are_left_to_it(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    await bench.valkey.set(streams.worker_alive("live-worker"), b"1", px=5000)
    await _enqueue_for(bench, "live-worker", bench.call("k8s", "get", NS))
    await _idle(bench, "live-worker")
    assert await _reclaimer(bench, upstream).reclaim(upstream) == 0
    assert await bench.settled("k8s") == (1, 1)


async def test_a_call_delivered_too_often_goes_to_the_dead_letter_stream(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    call = bench.call("k8s", "get", NS)
    await _enqueue_for(bench, "dead-worker", call)
    await _idle(bench, "dead-worker", redeliveries=1)  # a third delivery
    reclaimer = _reclaimer(bench, upstream, max_deliveries=3)
    assert await reclaimer.reclaim(upstream) == 1 and reclaimer.dead_lettered == 1
    outcome = await bench.outcome()
    assert outcome.call_id == call.call_id and orjson.loads(outcome.body)["code"] == errors.OUTCOME_UNKNOWN
    assert await bench.valkey.xlen(streams.DEAD_LETTER) == 1
    assert await bench.settled("k8s") == (0, 0)
