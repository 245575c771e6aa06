"""A call's one outcome, and what goes with it: the reply to the caller, then FINISH (acknowledgement, queue-depth
and fair-share decrement, started marker and payload removed; queue.py). Both are written until Valkey has
them: while it is unreachable they wait and are tried again, so a call that ran is never left pending with its
caller waiting in vain. A worker that dies before writing them leaves the call pending, to be taken over.

The reply goes first (FINISH is in another hash slot, so the two cannot be one script): if the worker dies
between them, the call is redelivered and answered twice, and the ingress keeps the first answer only.
"""

import asyncio
import logging
import random
from typing import Any

from hiredis import ReplyError

from services.worker.liveness import Liveness
from services.worker.relays import Relays
from shared import errors, queue, streams
from shared.lifecycle import Background
from shared.messages import Call, CallReply, CallStats, Fields, ReplyKind
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

MAX_BACKOFF = 2.0
REFUSALS = 10  # Valkey refusing a write (out of memory, ...) is tried this often, then given up with an error


class Outcomes:
    def __init__(self, outbox: Outbox, relays: Relays, liveness: Liveness) -> None:
        self.outbox = outbox
        self.relays = relays
        self.liveness = liveness
        self.background = Background()
        self.unsettled = 0  # outcomes waiting for Valkey to take them: while above 0, the worker is not ready

    async def finish(
        self,
        queue_keys: streams.QueueKeys,
        entry_id: bytes,
        call: Call,
        kind: ReplyKind,
        body: bytes,
        stats: CallStats | None = None,
    ) -> None:
        """The call's reply (with what it cost: telemetry) and FINISH, written (or tried until they are)."""
        self.relays.drop(call.key)
        reply = None if self.liveness.replica_gone(call.replica) else CallReply(call.call_id, kind, body, stats=stats)
        await self._settle(queue_keys, entry_id, call, reply)

    def discard(self, queue_keys: streams.QueueKeys, entry_id: bytes, why: str) -> None:
        """An entry with no call to answer (malformed, or deleted once it was answered): let go of, quietly."""
        logger.warning("dropping entry %s on %s: %s", entry_id, queue_keys.server, why)
        self.background.spawn(self._settle(queue_keys, entry_id, None, None))

    def dead_letter(self, queue_keys: streams.QueueKeys, entry_id: bytes, fields: Fields, deliveries: int) -> None:
        """A call that failed on too many workers in a row: set aside on the dead-letter stream, answered
        "outcome unknown" (it may have run), and let go of."""
        logger.error(
            "call %s on %s was delivered %d times; moved to the dead-letter stream",
            entry_id,
            queue_keys.server,
            deliveries,
        )
        flat = [x for pair in fields.items() for x in pair]
        self.outbox.append(
            streams.DEAD_LETTER, streams.DEAD_LETTER_MAXLEN, [*flat, b"entry", entry_id, b"deliveries", deliveries]
        )
        try:
            call: Call | None = Call.from_fields(fields)
        except (KeyError, ValueError):
            call = None
        reply = None
        if call is not None:
            body = errors.OutcomeUnknown(f"the call failed on {deliveries} workers in a row and was set aside").body()
            reply = CallReply(call.call_id, ReplyKind.ERROR, body)
        self.background.spawn(self._settle(queue_keys, entry_id, call, reply))

    async def _settle(
        self, queue_keys: streams.QueueKeys, entry_id: bytes, call: Call | None, reply: CallReply | None
    ) -> None:
        writes = _Writes(self.outbox, queue_keys, entry_id, call, reply)
        attempt = refusals = 0
        while problems := await writes.attempt():
            if self.outbox.closed:  # the worker stopped: the call stays pending, for another to take over
                logger.warning("outcome of %s on %s not written: the worker stopped", entry_id, queue_keys.server)
                break
            if any(isinstance(p, ReplyError) for p in problems):
                refusals += 1
                if refusals > REFUSALS:
                    logger.error("giving up writing the outcome of %s on %s: %s", entry_id, queue_keys.server, problems)
                    break
            attempt += 1
            if attempt == 1:
                self.unsettled += 1
                logger.warning(
                    "outcome of %s on %s not written (%s); trying again until valkey takes it",
                    entry_id,
                    queue_keys.server,
                    problems[0],
                )
            await asyncio.sleep(min(MAX_BACKOFF, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        if attempt:
            self.unsettled -= 1
            logger.info("outcome of %s on %s written after %d retries", entry_id, queue_keys.server, attempt)


class _Writes:
    """A call's reply and FINISH, until Valkey has both."""

    def __init__(
        self, outbox: Outbox, queue_keys: streams.QueueKeys, entry_id: bytes, call: Call | None, reply: CallReply | None
    ) -> None:
        self.outbox = outbox
        self.queue_keys = queue_keys
        self.entry_id = entry_id
        self.call = call
        self.reply = reply if call is not None else None
        self.must_finish = True

    async def attempt(self) -> list[BaseException]:
        """Writes what Valkey does not have yet; returns what kept it from taking it."""
        # FINISH's task is made before the reply is queued, so that its script joins the reply's pipeline,
        # after it: the common case costs one write and one round trip.
        finishing = None
        if self.must_finish:
            finishing = asyncio.ensure_future(queue.finish(self.outbox, self.queue_keys, self.entry_id, self.call))
        replying = None
        if self.call is not None and self.reply is not None:
            replying = self.outbox.deliver(self.call.replica, self.reply)
        problems = []
        if replying is not None:
            problem = await _failure(replying)
            if problem is None:
                self.reply = None
            else:
                problems.append(problem)
        if finishing is not None:
            problem = await _failure(finishing)
            if problem is None or (isinstance(problem, ReplyError) and "NOGROUP" in str(problem)):
                self.must_finish = False  # done, or Valkey lost the queue (and this call with it) with its data
            else:
                problems.append(problem)
        return problems


async def _failure(write: "asyncio.Future[Any]") -> BaseException | None:
    """What kept a write from Valkey: the connection (ConnectionError) or a refusal (ReplyError); None if written."""
    try:
        await write
    except (ConnectionError, ReplyError) as exc:
        return exc
    return None
