"""A call's one outcome, and everything that goes with it in the same pipeline: the reply to the caller, the
acknowledgement and queue-depth decrement, the started marker's removal. A worker that dies before writing them
leaves the call pending, to be reclaimed by another worker."""

import logging

from services.worker.relays import Relays
from shared import errors, streams
from shared.messages import Call, CallReply, CallStats, Fields, ReplyKind
from shared.valkey import Outbox

logger = logging.getLogger(__name__)


class Outcomes:
    def __init__(self, outbox: Outbox, relays: Relays) -> None:
        self.outbox = outbox
        self.relays = relays

    def finish(
        self,
        queue: streams.QueueKeys,
        entry_id: bytes,
        call: Call,
        kind: ReplyKind,
        body: bytes,
        marker: bytes | None,
        stats: CallStats | None = None,
    ) -> None:
        self.outbox.reply(call.replica, CallReply(call.call_id, kind, body, stats=stats))
        self.outbox.acknowledge(queue, entry_id)
        self.outbox.post(b"XDEL", queue.stream, entry_id)  # an answered call's payload does not outlive it
        if marker is not None:
            self.outbox.post(b"DEL", marker)
        self.relays.drop(call.key)

    def discard(self, queue: streams.QueueKeys, entry_id: bytes, why: str) -> None:
        """An entry with no call to answer (malformed, or trimmed away before it was claimed)."""
        logger.warning("dropping entry %s on %s: %s", entry_id, queue.server, why)
        self.outbox.acknowledge(queue, entry_id)

    def dead_letter(self, queue: streams.QueueKeys, entry_id: bytes, fields: Fields, deliveries: int) -> None:
        """A call that failed on too many workers in a row: set aside on the dead-letter stream, answered
        "outcome unknown" (it may have run), and acknowledged."""
        logger.error(
            "call %s on %s was delivered %d times; moved to the dead-letter stream", entry_id, queue.server, deliveries
        )
        flat = [x for pair in fields.items() for x in pair]
        self.outbox.append(
            streams.DEAD_LETTER, streams.DEAD_LETTER_MAXLEN, [*flat, b"entry", entry_id, b"deliveries", deliveries]
        )
        try:
            call = Call.from_fields(fields)
        except (KeyError, ValueError):
            call = None
        if call is not None:
            body = errors.OutcomeUnknown(f"the call failed on {deliveries} workers in a row and was set aside").body()
            self.outbox.reply(call.replica, CallReply(call.call_id, ReplyKind.ERROR, body))
        self.outbox.acknowledge(queue, entry_id)
