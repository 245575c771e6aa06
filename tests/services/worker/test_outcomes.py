"""A call's one outcome and what leaves with it, against a real valkey-server."""

import orjson
import pytest

from services.worker.outcomes import Outcomes
from services.worker.relays import Relays
from shared import errors, streams
from shared.messages import ReplyKind
from tests.conftest import entries
from tests.services.worker.conftest import NS, WORKER, Bench

pytestmark = pytest.mark.anyio


@pytest.fixture
def outcomes(bench: Bench) -> Outcomes:
    return Outcomes(bench.outbox, Relays(bench.outbox, WORKER))


async def test_an_outcome_leaves_with_its_acknowledgement_and_takes_the_started_marker(
    bench: Bench, outcomes: Outcomes
) -> None:
    call = bench.call("k8s", "delete", NS, safe=False)
    [(entry_id, _)] = await bench.enqueue(call)
    queue = streams.queue("k8s")
    await bench.valkey.set(queue.started(entry_id), WORKER)
    outcomes.finish(queue, entry_id, call, ReplyKind.RESULT, b'{"content":[]}', queue.started(entry_id))
    assert await bench.settled("k8s") == (0, 0)
    assert [(r.call_id, r.kind, r.body) for r in await bench.replies(1)] == [
        (call.call_id, ReplyKind.RESULT, b'{"content":[]}')
    ]
    assert await bench.valkey.exists(queue.started(entry_id)) == 0


async def test_an_entry_with_nothing_to_answer_is_only_acknowledged(bench: Bench, outcomes: Outcomes) -> None:
    [(entry_id, _)] = await bench.enqueue(bench.call("k8s", "get", NS))
    outcomes.discard(streams.queue("k8s"), entry_id, "malformed")
    assert await bench.settled("k8s") == (0, 0)
    assert await bench.valkey.xlen(streams.replies("replica-under-test")) == 0


async def test_a_dead_lettered_call_is_set_aside_and_answered_outcome_unknown(bench: Bench, outcomes: Outcomes) -> None:
    call = bench.call("k8s", "delete", NS, safe=False)
    [(entry_id, fields)] = await bench.enqueue(call)
    outcomes.dead_letter(streams.queue("k8s"), entry_id, fields, 3)
    assert await bench.settled("k8s") == (0, 0)
    [(_, dead)] = await entries(bench.valkey, streams.DEAD_LETTER)
    assert dead[b"entry"] == entry_id and dead[b"deliveries"] == b"3" and dead[b"call_id"] == call.call_id
    [reply] = await bench.replies(1)
    assert reply.call_id == call.call_id and orjson.loads(reply.body)["code"] == errors.OUTCOME_UNKNOWN
