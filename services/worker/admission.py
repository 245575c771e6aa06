"""Whether a call taken from its queue may run now: not past its deadline, not cancelled, and, if it is not safe
to run twice, not possibly run already by a worker that died. A call that is not safe to run twice is marked as
started before it is sent, so that its redelivery can tell."""

import time

from shared import errors, streams
from shared.messages import Call
from shared.valkey import Outbox

CANCEL_MEMORY = 600.0  # seconds a cancellation is remembered for calls still in a queue
MAX_REMEMBERED = 10_000


class Admission:
    def __init__(self, outbox: Outbox, worker_id: str) -> None:
        self.outbox = outbox
        self.worker_id = worker_id.encode()
        self.cancelled: dict[bytes, float] = {}  # call key -> until when it is remembered

    def cancel(self, key: bytes) -> None:
        now = time.monotonic()
        self.cancelled[key] = now + CANCEL_MEMORY
        if len(self.cancelled) > MAX_REMEMBERED:
            self.cancelled = {k: until for k, until in self.cancelled.items() if until > now}

    async def admit(self, queue: streams.QueueKeys, entry_id: bytes, call: Call, redelivered: bool) -> bytes | None:
        """None when the call may run now; otherwise the error that is its outcome."""
        if call.deadline_ms / 1000 <= time.time():
            return errors.DeadlineExceeded(
                "the call's deadline passed while it waited in the queue; it did not run"
            ).body()
        if call.key in self.cancelled:
            return errors.Cancelled("cancelled before it ran").body()
        if not call.safe:
            marker = queue.started(entry_id)
            if redelivered and await self.outbox.send(b"EXISTS", marker):
                return errors.OutcomeUnknown(
                    "the worker running this call stopped; it may have run, and it is not safe to run twice"
                ).body()
            await self.outbox.send(b"SET", marker, self.worker_id, b"EX", streams.STARTED_TTL)
        return None
