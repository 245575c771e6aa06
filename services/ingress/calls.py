"""Calls in flight from this replica: enqueued on their server's stream, answered on this replica's reply stream.

One reader task demultiplexes the reply stream to the waiting requests (and hands the session events on it to
the GET streams), and one sweeper answers the calls whose deadline passed, so no request needs a timer or a
task of its own. An upstream's request that cannot be delivered (its call has ended, or the session's GET stream
is not open here) is answered at once with an error, so that the upstream waiting for it is not left hanging.
"""

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable

from redis.asyncio import Redis

from services.ingress.get_streams import GetStreams
from shared import errors, streams
from shared.follow import BEGINNING, Follow
from shared.messages import Answer, Call, CallReply, CancelCall, ReplyKind, SessionEvent, read_reply
from shared.valkey import BLOCK_SECONDS, Outbox, enqueue

logger = logging.getLogger(__name__)

# Past the deadline the worker answers by itself; the sweeper waits this much longer before it
# answers in the worker's place.
SWEEP_GRACE = 2.0
SWEEP_SECONDS = 0.25


class ReplicaFull(errors.QueueFull):
    """This replica waits for as many calls as it may (max_pending); the server's queue may have room."""


class Pending:
    """The replies of one call, in order, for the request that waits for them."""

    __slots__ = ("key", "replies", "safe", "waiter")

    def __init__(self, key: bytes = b"", safe: bool = False) -> None:
        self.key = key  # Call.key: what cancels it
        self.safe = safe
        self.replies: deque[CallReply] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def push(self, reply: CallReply) -> None:
        self.replies.append(reply)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next(self) -> CallReply:
        if not self.replies:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        return self.replies.popleft()


class Calls:
    def __init__(
        self,
        client: Redis,
        outbox: Outbox,
        replica: str,
        get_streams: GetStreams,
        *,
        queue_limit: int,
        max_pending: int,
        retry_after: float,
        asked: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        self.client = client
        # (session, ref): a request relayed to the session's GET stream, which only that session may answer once
        self.asked = asked
        self.outbox = outbox
        self.replica = replica.encode()
        self.get_streams = get_streams
        self.queue_limit = queue_limit
        self.max_pending = max_pending
        self.retry_after = retry_after
        self.pending: dict[bytes, Pending] = {}
        self.draining = False  # the replica is shutting down: no new call is accepted
        self._quiet = asyncio.Event()  # while draining: no call is in flight any more
        self._deadlines: list[tuple[float, bytes]] = []
        self._ids = itertools.count(1)
        # the replica id is new, so everything in its stream is for this process
        self._replies = Follow(
            client, [streams.replies(replica)], since=BEGINNING, count=1024, block_ms=BLOCK_SECONDS * 1000
        )

    def new_call_id(self) -> bytes:
        return b"%d" % next(self._ids)

    async def submit(self, call: Call) -> Pending:
        """Enqueue the call; raises QueueFull when its server's queue or this replica is at its bound, and
        ServiceUnavailable while the replica drains."""
        if self.draining:
            raise errors.ServiceUnavailable(
                "this muster replica is shutting down and took no new call; retry, another replica will take it",
                self.retry_after,
            )
        if len(self.pending) >= self.max_pending:
            raise ReplicaFull("this muster replica has too many calls in flight; retry shortly", self.retry_after)
        pending = self.pending[call.call_id] = Pending(call.key, call.safe)
        heapq.heappush(self._deadlines, (call.deadline_ms / 1000 + SWEEP_GRACE, call.call_id))
        try:
            entry = await enqueue(self.outbox, call, self.queue_limit)
        except BaseException:
            self.pending.pop(call.call_id, None)
            raise
        if entry is None:
            self.pending.pop(call.call_id, None)
            raise errors.QueueFull(
                f"the queue of {call.server.decode()} is full ({self.queue_limit} calls); retry shortly",
                self.retry_after,
            )
        return pending

    def done(self, call_id: bytes) -> None:
        """The request that waited for the call has answered its caller."""
        self.pending.pop(call_id, None)
        if self.draining and not self.pending:
            self._quiet.set()

    async def settle(self, within: float) -> None:
        """While draining: returns once every call in flight has been answered, or after `within` seconds."""
        if self.pending:
            self._quiet.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), within)

    async def read_replies(self) -> None:
        async for batch in self._replies:
            for stream, entries in batch:
                if entries:  # read is done with: a result does not stay in Valkey until the stream's bound trims it
                    self.outbox.post(b"XTRIM", stream, b"MINID", entries[-1][0])
                    self.outbox.post(b"XDEL", stream, entries[-1][0])
                for entry_id, fields in entries:
                    try:
                        reply = read_reply(fields)
                    except (KeyError, ValueError):
                        logger.error("malformed reply %s dropped", entry_id)
                        continue
                    if isinstance(reply, SessionEvent):
                        self._to_session(reply)
                        continue
                    pending = self.pending.get(reply.call_id)
                    if pending is not None:
                        pending.push(reply)
                        if reply.final:
                            del self.pending[reply.call_id]
                    elif reply.kind is ReplyKind.REQUEST:
                        self.unreachable(reply.ref, b"", "the call it was sent for has ended")

    def _to_session(self, event: SessionEvent) -> None:
        """An event for a session's GET stream; a request there (with a ref) is one the session may answer."""
        if event.ref and self.asked is not None:
            self.asked(event.session, event.ref)
        if not self.get_streams.send(event.session.decode(), event.body) and event.ref:
            self.unreachable(event.ref, event.session, "the client's GET stream is not open")

    def unreachable(self, ref: bytes, session: bytes, why: str) -> None:
        """Answers an upstream's request in the client's place: it cannot be delivered."""
        body = b'"error":' + errors.InternalError(f"muster cannot reach the client: {why}").body()
        answer = Answer(ref, session, body)
        self.outbox.append(streams.inbox(answer.worker), streams.INBOX_MAXLEN, answer.fields())

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.expire(time.time())

    def expire(self, now: float) -> None:
        """Answers, in the worker's place, the calls whose deadline (and grace) passed before `now`."""
        if len(self._deadlines) > 4 * len(self.pending) + 1024:  # most entries belong to answered calls
            self._deadlines = [d for d in self._deadlines if d[1] in self.pending]
            heapq.heapify(self._deadlines)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, call_id = heapq.heappop(self._deadlines)
            pending = self.pending.pop(call_id, None)
            if pending is not None:
                body = errors.DeadlineExceeded(
                    "no outcome before the call's deadline; it may or may not have run"
                ).body()
                pending.push(CallReply(call_id, ReplyKind.ERROR, body))

    def abandon(self) -> int:
        """Answers every call still waiting, at the end of a drain, and cancels it, so that none runs after its
        caller was told otherwise. A call that is safe to run twice may simply be retried; any other may have run."""
        left, self.pending = self.pending, {}
        for call_id, pending in left.items():
            self.outbox.publish(streams.CONTROL, CancelCall(key=pending.key.decode(), reason="the replica shut down"))
            if pending.safe:
                error: errors.MusterError = errors.ServiceUnavailable(
                    "this muster replica shut down before the call's outcome arrived; the call was cancelled, and it "
                    "is safe to retry",
                    self.retry_after,
                )
            else:
                error = errors.OutcomeUnknown(
                    "this muster replica shut down before the call's outcome arrived; the call was cancelled, but it "
                    "may have run, and it is not safe to run twice"
                )
            pending.push(CallReply(call_id, ReplyKind.ERROR, error.body()))
        return len(left)
