"""Whether a call taken from its queue may run now: not past its deadline, not cancelled, its caller still there
(the ingress replica waiting for it alive), and, if it is not safe to run twice, not possibly run already by a
worker that died. A call that is not safe to run twice is marked as started before it is sent, so that its
redelivery can tell."""

import time

from services.worker.liveness import Liveness
from shared import errors, streams
from shared.messages import Call
from shared.resp import ConnectionClosed
from shared.valkey import Outbox

CANCEL_MEMORY = 600.0  # seconds a cancellation is remembered for calls still in a queue
MAX_REMEMBERED = 10_000


class Admission:
    def __init__(self, outbox: Outbox, worker_id: str, liveness: Liveness) -> None:
        self.outbox = outbox
        self.worker_id = worker_id.encode()
        self.liveness = liveness
        self.cancelled: dict[bytes, float] = {}  # call key -> until when it is remembered
        self.ended: dict[bytes, float] = {}  # agent session -> until when its end is remembered
        self.callers_gone = 0

    def cancel(self, key: bytes) -> None:
        self.cancelled = _remember(self.cancelled, key)

    def session_ended(self, agent: bytes) -> None:
        self.ended = _remember(self.ended, agent)

    async def admit(self, queue: streams.QueueKeys, entry_id: bytes, call: Call, redelivered: bool) -> bytes | None:
        """None when the call may run now; otherwise the error that is its outcome."""
        if call.deadline_ms / 1000 <= time.time():
            return errors.DeadlineExceeded(
                "the call's deadline passed while it waited in the queue; it did not run"
            ).body()
        if call.key in self.cancelled:
            return errors.Cancelled("cancelled before it ran").body()
        if call.session and call.session in self.ended:
            return errors.Cancelled("its session ended before it ran").body()
        if self.liveness.replica_gone(call.replica):
            self.callers_gone += 1
            return errors.Cancelled(
                "its caller is gone (the ingress replica that took it stopped); it did not run"
            ).body()
        if not call.safe:
            try:
                return await self._mark_started(queue, entry_id, redelivered)
            except ConnectionClosed as exc:
                return errors.ServiceUnavailable(
                    f"muster could not reach its valkey; the call did not run: {exc}", 1.0
                ).body()
        return None

    async def _mark_started(self, queue: streams.QueueKeys, entry_id: bytes, redelivered: bool) -> bytes | None:
        marker = queue.started(entry_id)
        if redelivered and await self.outbox.send(b"EXISTS", marker):
            return errors.OutcomeUnknown(
                "the worker running this call stopped; it may have run, and it is not safe to run twice"
            ).body()
        await self.outbox.send(b"SET", marker, self.worker_id, b"EX", streams.STARTED_TTL)
        return None


def _remember(memory: dict[bytes, float], key: bytes) -> dict[bytes, float]:
    """`memory` with `key` remembered for CANCEL_MEMORY seconds, and what has expired forgotten once it is large."""
    now = time.monotonic()
    memory[key] = now + CANCEL_MEMORY
    if len(memory) > MAX_REMEMBERED:
        return {k: until for k, until in memory.items() if until > now}
    return memory
