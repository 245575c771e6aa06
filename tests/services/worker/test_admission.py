"""Whether a call may run, against a real valkey-server: deadline, cancellation, and the started marker that
keeps a call that is not safe to run twice from running twice."""

import time

import orjson
import pytest

from services.worker.admission import CANCEL_MEMORY, MAX_REMEMBERED, Admission
from services.worker.liveness import Liveness
from shared import errors, streams
from tests.services.worker.conftest import NS, WORKER, Bench

pytestmark = pytest.mark.anyio

ENTRY = b"1700000000000-0"


def _code(refusal: bytes | None) -> int:
    assert refusal is not None
    code: int = orjson.loads(refusal)["code"]
    return code


async def test_a_call_not_safe_to_run_twice_is_marked_before_it_runs(bench: Bench) -> None:
    admission = Admission(bench.outbox, WORKER, bench.dispatcher.liveness)
    queue = streams.queue("k8s")
    assert await admission.admit(queue, ENTRY, bench.call("k8s", "delete", NS, safe=False), redelivered=False) is None
    marker = queue.started(ENTRY)
    assert await bench.valkey.get(marker) == WORKER.encode()
    assert 0 < await bench.valkey.ttl(marker) <= streams.STARTED_TTL
    assert await admission.admit(queue, b"2-0", bench.call("k8s", "get", NS), redelivered=False) is None
    assert await bench.valkey.exists(queue.started(b"2-0")) == 0  # a safe call needs no marker


async def test_a_redelivered_call_that_may_have_run_is_outcome_unknown(bench: Bench) -> None:
    admission = Admission(bench.outbox, WORKER, bench.dispatcher.liveness)
    queue = streams.queue("k8s")
    call = bench.call("k8s", "delete", NS, safe=False)
    await admission.admit(queue, ENTRY, call, redelivered=False)  # the worker that died got this far
    assert _code(await admission.admit(queue, ENTRY, call, redelivered=True)) == errors.OUTCOME_UNKNOWN
    never_started = bench.call("k8s", "delete", NS, safe=False)
    assert await admission.admit(queue, b"3-0", never_started, redelivered=True) is None


async def test_late_or_cancelled_calls_are_refused(bench: Bench) -> None:
    admission = Admission(bench.outbox, WORKER, bench.dispatcher.liveness)
    queue = streams.queue("k8s")
    late = bench.call("k8s", "get", NS, deadline_ms=int(time.time() * 1000) - 1)
    assert _code(await admission.admit(queue, ENTRY, late, redelivered=False)) == errors.DEADLINE_EXCEEDED
    cancelled = bench.call("k8s", "get", NS)
    admission.cancel(cancelled.key)
    assert _code(await admission.admit(queue, ENTRY, cancelled, redelivered=False)) == errors.CANCELLED
    admission.session_ended(b"session-1")  # the agent ended its session with calls still queued
    of_it, of_another = bench.call("k8s", "get", NS), bench.call("k8s", "get", NS, session=b"session-2")
    assert _code(await admission.admit(queue, ENTRY, of_it, redelivered=False)) == errors.CANCELLED
    assert await admission.admit(queue, ENTRY, of_another, redelivered=False) is None


def test_cancellations_are_remembered_for_a_while_and_not_for_ever(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    liveness = Liveness.of(WORKER, heartbeat=1, dead_after=5, replica_dead_after=15)
    admission = Admission(None, WORKER, liveness)  # type: ignore[arg-type]  # remembering needs no Valkey
    admission.cancel(b"old")
    now[0] += CANCEL_MEMORY + 1
    for n in range(MAX_REMEMBERED):
        admission.cancel(b"%d" % n)
    assert b"old" not in admission.cancelled and len(admission.cancelled) == MAX_REMEMBERED


async def test_a_call_whose_replica_is_gone_is_not_run(bench: Bench) -> None:
    liveness = bench.dispatcher.liveness
    admission = Admission(bench.outbox, WORKER, liveness)
    queue = streams.queue("k8s")
    call = bench.call("k8s", "get", NS)
    liveness.watch_replicas({call.replica})
    assert await admission.admit(queue, ENTRY, call, redelivered=False) is None
    replica_beat = streams.replica_beat(call.replica.decode()).encode()
    assert replica_beat in liveness.watched()
    for own in range(liveness.replica_beats + 1):  # this worker beats on, the replica's counter stands still
        liveness.observe({liveness.own: b"%d" % own, replica_beat: b"7"})
    refusal = await admission.admit(queue, ENTRY, call, redelivered=False)
    assert _code(refusal) == errors.CANCELLED and b"caller is gone" in (refusal or b"")
