"""A call's one outcome and what leaves with it, against a real valkey-server: written once, and written even when
Valkey does not take it at first."""

import asyncio
from collections.abc import AsyncIterator

import anyio
import orjson
import pytest

from services.worker.liveness import Liveness
from services.worker.outcomes import Outcomes
from services.worker.relays import Relays
from shared import errors, queue, streams
from shared.messages import ReplyKind
from shared.valkey import Outbox
from tests.conftest import entries
from tests.services.worker.conftest import NS, REPLICA, WORKER, Bench

pytestmark = pytest.mark.anyio


def _outcomes(outbox: Outbox, liveness: Liveness | None = None) -> Outcomes:
    liveness = liveness or Liveness.of(WORKER, heartbeat=1, dead_after=5, replica_dead_after=15)
    return Outcomes(outbox, Relays(outbox, WORKER), liveness)


@pytest.fixture
def outcomes(bench: Bench) -> Outcomes:
    return _outcomes(bench.outbox)


async def test_an_outcome_leaves_with_its_acknowledgement_and_takes_the_marker_and_the_payload(
    bench: Bench, outcomes: Outcomes
) -> None:
    call = bench.call("k8s", "delete", NS, safe=False)
    [(entry_id, _)] = await bench.enqueue(call)
    keys = streams.queue("k8s")
    await bench.valkey.set(keys.started(entry_id), WORKER)
    await outcomes.finish(keys, entry_id, call, ReplyKind.RESULT, b'{"content":[]}')
    assert await bench.settled("k8s") == (0, 0)
    assert [(r.call_id, r.kind, r.body) for r in await bench.replies(1)] == [
        (call.call_id, ReplyKind.RESULT, b'{"content":[]}')
    ]
    assert await bench.valkey.exists(keys.started(entry_id)) == 0
    assert await bench.valkey.xlen(keys.stream) == 0  # the answered call's payload is gone with it
    assert await bench.valkey.hgetall(keys.shares) == {}


async def test_finishing_a_call_twice_moves_the_counters_once(bench: Bench, outcomes: Outcomes) -> None:
    first, second = bench.call("k8s", "get", NS), bench.call("k8s", "get", NS)
    [(entry_id, _), _] = await bench.enqueue(first, second)
    keys = streams.queue("k8s")
    assert await queue.finish(bench.outbox, keys, entry_id, first) == 1
    assert await queue.finish(bench.outbox, keys, entry_id, first) == 0  # a retry, or a worker that took it over
    assert await bench.valkey.get(keys.depth) == b"1"
    assert await bench.valkey.hgetall(keys.shares) == {b"session-1": b"1"}


async def test_an_entry_with_nothing_to_answer_is_only_let_go_of(bench: Bench, outcomes: Outcomes) -> None:
    [(entry_id, _)] = await bench.enqueue(bench.call("k8s", "get", NS))
    outcomes.discard(streams.queue("k8s"), entry_id, "malformed")
    await outcomes.background.wait(5)
    assert (await bench.settled("k8s"))[1] == 0
    assert await bench.valkey.xlen(streams.replies(REPLICA.decode())) == 0


async def test_a_dead_lettered_call_is_set_aside_and_answered_outcome_unknown(bench: Bench, outcomes: Outcomes) -> None:
    call = bench.call("k8s", "delete", NS, safe=False)
    [(entry_id, fields)] = await bench.enqueue(call)
    outcomes.dead_letter(streams.queue("k8s"), entry_id, fields, 3)
    await outcomes.background.wait(5)
    assert await bench.settled("k8s") == (0, 0)
    [(_, dead)] = await entries(bench.valkey, streams.DEAD_LETTER)
    assert dead[b"entry"] == entry_id and dead[b"deliveries"] == b"3" and dead[b"call_id"] == call.call_id
    [reply] = await bench.replies(1)
    assert reply.call_id == call.call_id and orjson.loads(reply.body)["code"] == errors.OUTCOME_UNKNOWN


@pytest.fixture
async def impatient(bench: Bench, valkey_url: str) -> AsyncIterator[Outbox]:
    """An outbox that gives Valkey 0.2 s per command, as a worker's does (MUSTER_VALKEY_TIMEOUT)."""
    outbox = Outbox(valkey_url, name="muster-test-impatient", timeout=0.2)
    try:
        yield outbox
    finally:
        outbox.close()


async def test_an_outcome_valkey_does_not_take_at_first_is_written_once_it_does(
    bench: Bench, impatient: Outbox
) -> None:
    outcomes = _outcomes(impatient)
    call = bench.call("k8s", "get", NS)
    [(entry_id, _)] = await bench.enqueue(call)
    await bench.valkey.client_pause(1500, all=False)  # Valkey takes no write for 1.5 s
    try:
        with anyio.fail_after(10):
            writing = asyncio.ensure_future(
                outcomes.finish(streams.queue("k8s"), entry_id, call, ReplyKind.RESULT, b"{}")
            )
            while not outcomes.unsettled:
                await anyio.sleep(0.02)
            await writing
    finally:
        await bench.valkey.client_unpause()
    assert outcomes.unsettled == 0
    assert await bench.settled("k8s") == (0, 0)
    assert [r.call_id for r in await bench.replies(1)] == [call.call_id]


async def test_an_outcome_is_no_longer_tried_once_the_worker_closed_its_connection(
    bench: Bench, impatient: Outbox
) -> None:
    # A worker that stopped: the call stays pending, for another worker to take over; it does not keep this one alive.
    outcomes = _outcomes(impatient)
    call = bench.call("k8s", "get", NS)
    [(entry_id, _)] = await bench.enqueue(call)
    impatient.close()
    with anyio.fail_after(5):
        await outcomes.finish(streams.queue("k8s"), entry_id, call, ReplyKind.RESULT, b"{}")
    assert outcomes.unsettled == 0
    assert await bench.settled("k8s") == (1, 1)  # not finished: still counted, still pending
    assert await bench.replies(0) == []


async def test_no_reply_is_written_for_a_replica_that_is_gone(bench: Bench) -> None:
    liveness = Liveness.of(WORKER, heartbeat=1, dead_after=5, replica_dead_after=15)
    outcomes = _outcomes(bench.outbox, liveness)
    call = bench.call("k8s", "get", NS)
    [(entry_id, _)] = await bench.enqueue(call)
    liveness.watch_replicas({call.replica})
    replica_beat = streams.replica_beat(call.replica.decode()).encode()
    for own in range(liveness.replica_beats + 1):
        liveness.observe({liveness.own: b"%d" % own, replica_beat: None})
    await outcomes.finish(streams.queue("k8s"), entry_id, call, ReplyKind.RESULT, b"{}")
    assert await bench.settled("k8s") == (0, 0)
    assert await bench.valkey.exists(streams.replies(REPLICA.decode())) == 0
