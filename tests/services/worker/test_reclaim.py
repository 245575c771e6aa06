"""Taking over a dead worker's calls, against a real valkey-server and upstream: run again if safe, set aside
after too many deliveries; a live worker's calls are never taken, not even while Valkey stood still; each
server's takeover on its own lane; a restarted worker takes back its own calls first."""

import asyncio
from typing import Any

import anyio
import orjson
import pytest

from services.worker.liveness import Liveness
from services.worker.reclaim import CLAIM_MIN_IDLE_MS, Reclaimer
from services.worker.upstream import Upstream
from shared import errors, streams
from shared.messages import Call, CallReply, ReplyKind
from tests.conftest import StandIn
from tests.services.worker.conftest import NS, REPLICA, WORKER, Bench, error_code, wait_running

pytestmark = pytest.mark.anyio

DEAD_AFTER_BEATS = 3


def _reclaimer(bench: Bench, *upstreams: Upstream, max_deliveries: int = 3) -> Reclaimer:
    bench.dispatcher.liveness.beats = DEAD_AFTER_BEATS
    return Reclaimer(
        bench.valkey,
        bench.dispatcher,
        lambda: upstreams,
        bench.dispatcher.liveness,
        worker_id=WORKER,
        interval=1,
        max_deliveries=max_deliveries,
    )


async def _beat(bench: Bench, worker: str, times: int = 1) -> None:
    for _ in range(times):
        await bench.valkey.incr(streams.worker_beat(worker))


async def _idle(bench: Bench, worker: str, redeliveries: int = 0, server: str = "k8s") -> None:
    """Delivers `worker`'s calls to it again `redeliveries` times, then waits until a claim may take them."""
    queue = streams.queue(server)
    for _ in range(redeliveries):
        await bench.valkey.xreadgroup(streams.GROUP_WORKERS, worker, {queue.stream: "0"})
    await anyio.sleep(CLAIM_MIN_IDLE_MS / 1000 + 0.1)


async def _enqueue_for(bench: Bench, worker: str, *calls: Call) -> list[bytes]:
    """Enqueues calls that `worker` holds, as if it had been running them; returns their entry ids."""
    queue = streams.queue(calls[0].server.decode())
    await bench.enqueue(*calls)  # read by the worker under test: hand them over to the other one
    pending: Any = await bench.valkey.xpending_range(queue.stream, streams.GROUP_WORKERS, "-", "+", 100)
    ids = [row["message_id"] for row in pending]
    await bench.valkey.xclaim(queue.stream, streams.GROUP_WORKERS, worker, 0, ids)
    return ids


async def _sweep_while(bench: Bench, reclaimer: Reclaimer, *, own: int, others: dict[str, int]) -> None:
    """Sweeps once per beat of this worker, `own` times, while the named workers beat as often as given."""
    for n in range(own):
        await _beat(bench, WORKER)
        for worker, times in others.items():
            if n < times:
                await _beat(bench, worker)
        await reclaimer.sweep()


async def _taken_over(reclaimer: Reclaimer) -> None:
    with anyio.fail_after(10):
        for task in list(reclaimer.lanes.values()):
            await task


async def test_the_calls_of_a_worker_whose_heartbeat_stood_still_are_run_by_another(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    await _enqueue_for(bench, "dead-worker", bench.call("k8s", "get", NS))
    await _idle(bench, "dead-worker")
    reclaimer = _reclaimer(bench, upstream)
    await _sweep_while(bench, reclaimer, own=DEAD_AFTER_BEATS, others={"dead-worker": 1})
    assert not reclaimer.lanes  # it stood still for fewer beats than it takes
    await _sweep_while(bench, reclaimer, own=1, others={})
    await _taken_over(reclaimer)
    assert reclaimer.reclaimed == 1
    assert (await bench.outcome()).kind is ReplyKind.RESULT
    assert await bench.settled("k8s") == (0, 0)


async def test_a_live_worker_s_calls_are_left_to_it(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    await _enqueue_for(bench, "live-worker", bench.call("k8s", "get", NS))
    await _idle(bench, "live-worker")
    reclaimer = _reclaimer(bench, upstream)
    await _sweep_while(bench, reclaimer, own=3 * DEAD_AFTER_BEATS, others={"live-worker": 3 * DEAD_AFTER_BEATS})
    assert not reclaimer.lanes and await bench.settled("k8s") == (1, 1)


async def test_while_valkey_takes_no_heartbeat_nobody_is_judged_dead(bench: Bench, k8s: StandIn) -> None:
    # An outage or a freeze of Valkey stops every heartbeat, this worker's too: time as the judge counts it
    # stands still, however long the outage, and keys that expired meanwhile do not matter.
    upstream = bench.upstream(k8s)
    await _enqueue_for(bench, "live-worker", bench.call("k8s", "get", NS))
    await _idle(bench, "live-worker")
    reclaimer = _reclaimer(bench, upstream)
    await _sweep_while(bench, reclaimer, own=1, others={"live-worker": 1})
    for _ in range(3 * DEAD_AFTER_BEATS):
        await reclaimer.sweep()
    await bench.valkey.delete(streams.worker_beat(WORKER))  # and Valkey came back without its data
    await reclaimer.sweep()
    await _sweep_while(bench, reclaimer, own=DEAD_AFTER_BEATS - 1, others={})
    assert not reclaimer.lanes and await bench.settled("k8s") == (1, 1)


async def test_a_call_delivered_too_often_goes_to_the_dead_letter_stream(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    call = bench.call("k8s", "get", NS)
    await _enqueue_for(bench, "dead-worker", call)
    await _idle(bench, "dead-worker", redeliveries=1)  # a third delivery
    reclaimer = _reclaimer(bench, upstream, max_deliveries=3)
    await _sweep_while(bench, reclaimer, own=DEAD_AFTER_BEATS + 1, others={})
    await _taken_over(reclaimer)
    await bench.dispatcher.outcomes.background.wait(5)
    assert reclaimer.dead_lettered == 1
    outcome = await bench.outcome()
    assert outcome.call_id == call.call_id and orjson.loads(outcome.body)["code"] == errors.OUTCOME_UNKNOWN
    assert await bench.valkey.xlen(streams.DEAD_LETTER) == 1
    assert await bench.settled("k8s") == (0, 0)


async def test_a_restarted_worker_takes_back_its_own_calls_first(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    safe = bench.call("k8s", "get", NS)
    started = bench.call("k8s", "delete", NS, safe=False)
    not_started = bench.call("k8s", "delete", {**NS, "name": "other"}, safe=False)
    ids = await _enqueue_for(bench, WORKER, safe, started, not_started)  # what the previous incarnation held
    await bench.valkey.set(streams.queue("k8s").started(ids[1]), WORKER)  # it had sent this one upstream
    before = k8s.stats()["tools"].get("delete", 0)
    reclaimer = _reclaimer(bench, upstream)
    reclaimer.adopt(upstream)
    await _taken_over(reclaimer)
    await bench.dispatcher.drain(5)
    outcomes = {r.call_id: r for r in await bench.replies(3)}
    assert outcomes[safe.call_id].kind is ReplyKind.RESULT
    assert error_code(outcomes[started.call_id]) == errors.OUTCOME_UNKNOWN
    assert outcomes[not_started.call_id].kind is ReplyKind.RESULT
    assert k8s.stats()["tools"].get("delete", 0) == before + 1  # only the one that never reached the upstream
    assert await bench.settled("k8s") == (0, 0)


async def test_one_server_s_full_lane_does_not_hold_up_another_s_takeover(
    bench: Bench, k8s: StandIn, upstreams: dict[str, StandIn]
) -> None:
    busy = bench.upstream(k8s, concurrency=1)
    other = bench.upstream(StandIn("other", k8s.port))  # another server's queue, served by the same process
    k8s.fault(action="delay", tool="cluster_health", seconds=4, count=1)
    entries = await bench.enqueue(bench.call("k8s", "cluster_health", {}))
    taking = asyncio.ensure_future(bench.dispatcher.take(busy, entries))  # the lane is full until it is done
    await wait_running(k8s, 1)
    await _enqueue_for(bench, "dead-worker", bench.call("k8s", "get", NS))
    await _enqueue_for(bench, "dead-worker", bench.call("other", "get", NS))
    await _idle(bench, "dead-worker")
    reclaimer = _reclaimer(bench, busy, other)
    await _sweep_while(bench, reclaimer, own=DEAD_AFTER_BEATS + 1, others={})
    with anyio.fail_after(3):  # long before the busy lane has room
        await reclaimer.lanes["other"]
        while (await bench.settled("other"))[1]:
            await anyio.sleep(0.02)
    assert not reclaimer.lanes["k8s"].done() and not taking.done()
    await _taken_over(reclaimer)


async def test_a_replica_that_is_gone_loses_its_reply_stream_and_stays_gone_until_its_heartbeat_expired(
    bench: Bench,
) -> None:
    reclaimer = _reclaimer(bench)
    liveness = bench.dispatcher.liveness
    liveness.replica_beats = DEAD_AFTER_BEATS
    bench.outbox.reply(REPLICA, CallReply(b"1", ReplyKind.RESULT, b"{}"))
    await bench.outbox.drain()
    assert await bench.valkey.exists(streams.replies(REPLICA.decode())) == 1
    await bench.valkey.sadd(streams.REPLICAS, REPLICA, b"live-replica", b"stopped-replica")
    await bench.valkey.incr(streams.replica_beat(REPLICA.decode()))
    await bench.valkey.set(streams.replica_beat("stopped-replica"), streams.BEAT_STOPPED)
    await _sweep_while(bench, reclaimer, own=1, others={})
    assert liveness.replica_gone(b"stopped-replica")  # it said so: no need to wait
    assert not liveness.replica_gone(REPLICA)
    await _sweep_while(bench, reclaimer, own=DEAD_AFTER_BEATS - 1, others={})
    assert liveness.replicas == {REPLICA, b"live-replica", b"stopped-replica"}
    for _ in range(2):
        await bench.valkey.incr(streams.replica_beat("live-replica"))
        await _sweep_while(bench, reclaimer, own=1, others={})
    assert await bench.valkey.exists(streams.replies(REPLICA.decode())) == 0
    assert liveness.replica_gone(REPLICA) and not liveness.replica_gone(b"live-replica")
    assert await bench.valkey.smembers(streams.REPLICAS) == {REPLICA, b"live-replica", b"stopped-replica"}
    await bench.valkey.delete(streams.replica_beat(REPLICA.decode()))  # a day later, its heartbeat expired
    await _sweep_while(bench, reclaimer, own=2, others={})
    assert await bench.valkey.smembers(streams.REPLICAS) == {b"live-replica", b"stopped-replica"}


def test_liveness_forgets_everything_when_its_own_counter_went_back() -> None:
    liveness = Liveness(b"own", beats=2, replica_beats=4)
    liveness.observe({b"own": b"10", b"other": b"5"})
    liveness.observe({b"own": b"12", b"other": b"5"})
    assert liveness.dead(b"other")
    liveness.observe({b"own": b"1", b"other": b"5"})  # Valkey restarted without its data
    assert not liveness.dead(b"other")
    liveness.observe({b"own": b"3", b"other": b"5"})
    assert liveness.dead(b"other")


async def test_taking_back_its_own_calls_leaves_those_this_process_runs(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    k8s.fault(action="delay", tool="cluster_health", seconds=2, count=1)
    before = k8s.stats()["started"].get("cluster_health", 0)
    await bench.dispatcher.take(upstream, await bench.enqueue(bench.call("k8s", "cluster_health", {})))
    await wait_running(k8s, 1)
    await anyio.sleep(CLAIM_MIN_IDLE_MS / 1000 + 0.1)  # idle enough to be claimed, were it an orphan
    reclaimer = _reclaimer(bench, upstream)
    reclaimer.adopt(upstream)
    await _taken_over(reclaimer)
    assert reclaimer.reclaimed == 0
    await bench.dispatcher.drain(5)
    assert k8s.stats()["started"]["cluster_health"] == before + 1
    assert await bench.settled("k8s") == (0, 0)


async def test_a_call_pending_for_this_worker_that_it_does_not_hold_is_taken_back(bench: Bench, k8s: StandIn) -> None:
    # As after a Valkey restart with `appendfsync everysec` that forgot a FINISH: the entry is pending for this
    # worker again, and nobody else would ever take it from a worker whose heartbeat advances.
    upstream = bench.upstream(k8s)
    await bench.enqueue(bench.call("k8s", "get", NS))  # read by this worker's consumer, held by no task
    await _idle(bench, WORKER)
    reclaimer = _reclaimer(bench, upstream)
    await _sweep_while(bench, reclaimer, own=1, others={})
    await _taken_over(reclaimer)
    assert (await bench.outcome()).kind is ReplyKind.RESULT
    await bench.dispatcher.drain(5)
    assert await bench.settled("k8s") == (0, 0)
