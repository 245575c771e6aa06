"""Calls in flight from this replica: enqueued on their server's stream, answered on this replica's reply stream.

One reader task demultiplexes the reply stream to the waiting requests (and hands the session events on it to
the GET streams), and one sweeper answers the calls whose deadline passed, so no request needs a timer or a
task of its own. A heartbeat tells the workers that this replica's callers are still there: calls for a replica
that died are not run, and its reply stream is removed. An upstream's request that cannot be delivered (its call
has ended, or the session's GET stream is not open here) is answered at once with an error, so that the upstream
waiting for it is not left hanging.

Bounds: the server's queue (across replicas, in Valkey), this replica's calls in flight, and this replica's calls
in flight to one server, so that servers that hang cannot take all of this replica's room from the others.
"""

import asyncio
import heapq
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable

import orjson
from redis.asyncio import Redis

from services.ingress.get_streams import GetStreams
from shared import errors, queue, streams
from shared.follow import BEGINNING, Follow
from shared.lifecycle import woken
from shared.messages import Answer, Call, CallReply, CancelCall, ReplyKind, SessionEvent, read_reply
from shared.resp import ConnectionClosed, Unreachable
from shared.valkey import BLOCK_SECONDS, Outbox

logger = logging.getLogger(__name__)

# Past the deadline the worker answers by itself; the sweeper waits this much longer before it
# answers in the worker's place.
SWEEP_GRACE = 2.0
SWEEP_SECONDS = 0.25
CLOCK_PRECISION = 0.05  # seconds: a measurement of Valkey's clock that took longer is not used


class ReplicaFull(errors.QueueFull):
    """This replica waits for as many calls as it may (max_pending); the server's queue may have room."""


class Pending:
    """The replies of one call, in order, for the request that waits for them."""

    __slots__ = ("key", "replies", "safe", "server", "waiter")

    def __init__(self, server: bytes = b"", key: bytes = b"", safe: bool = False) -> None:
        self.server = server
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
        max_pending_per_server: int | None = None,
        fair_share: int,
        enqueue_seconds: float | None = None,
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
        self.max_pending_per_server = max_pending_per_server or max_pending
        self.fair_share = fair_share
        # How long Valkey may take to queue a call: past it, this replica has given up on the ENQUEUE (the
        # outbox's timeout), so Valkey must not queue it when it runs the script later. Kept in Valkey's clock.
        self.enqueue_seconds = enqueue_seconds
        self.valkey_clock: float | None = None  # Valkey's clock minus this host's, as last measured
        self.retry_after = retry_after
        self.pending: dict[bytes, Pending] = {}
        self.per_server: Counter[bytes] = Counter()  # calls in flight from here, by server
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
        """Enqueue the call; raises QueueFull when its server's queue, this replica, or this replica's room for
        the server is at its bound; ConnectionError when Valkey could not take it; OutcomeUnknown when Valkey
        may have taken a call that is not safe to run twice and its caller must not simply send it again;
        ServiceUnavailable while the replica drains."""
        if self.draining:
            raise errors.ServiceUnavailable(
                "this muster replica is shutting down and took no new call; retry, another replica will take it",
                self.retry_after,
            )
        if len(self.pending) >= self.max_pending:
            raise ReplicaFull("this muster replica has too many calls in flight; retry shortly", self.retry_after)
        if self.per_server[call.server] >= self.max_pending_per_server:
            raise ReplicaFull(
                f"this muster replica has too many calls in flight to {call.server.decode()}; retry shortly",
                self.retry_after,
            )
        pending = self._hold(call)
        heapq.heappush(self._deadlines, (call.deadline_ms / 1000 + SWEEP_GRACE, call.call_id))
        until = self._until if self.enqueue_seconds is not None and self.valkey_clock is not None else None
        try:
            entry = await queue.enqueue(
                self.outbox, call, bound=self.queue_limit, fair_share=self.fair_share, until=until
            )
        except ConnectionClosed as exc:
            self.done(call.call_id)
            if call.safe or isinstance(exc, (Unreachable, queue.Late)):
                raise  # not queued, or harmless if it was: -32006, retry
            raise errors.OutcomeUnknown(
                "muster lost its valkey while queuing the call: it may still run, and it is not safe to run twice"
            ) from exc
        except BaseException:
            self.done(call.call_id)
            raise
        if entry is None:
            self.done(call.call_id)
            raise errors.QueueFull(
                f"the queue of {call.server.decode()} is full ({self.queue_limit} calls); retry shortly",
                self.retry_after,
            )
        return pending

    def _until(self) -> int:
        """Until when, in Valkey's clock (ms), an ENQUEUE written now may run: after that this replica gave up."""
        assert self.enqueue_seconds is not None and self.valkey_clock is not None
        return int((time.time() + self.valkey_clock + self.enqueue_seconds) * 1000)

    def _hold(self, call: Call) -> Pending:
        pending = self.pending[call.call_id] = Pending(call.server, call.key, call.safe)
        self.per_server[call.server] += 1
        return pending

    def done(self, call_id: bytes) -> Pending | None:
        """The call is no longer waited for here."""
        pending = self.pending.pop(call_id, None)
        if pending is not None:
            left = self.per_server[pending.server] - 1
            if left:
                self.per_server[pending.server] = left
            else:
                del self.per_server[pending.server]
        if self.draining and not self.pending:
            self._quiet.set()
        return pending

    async def settle(self, within: float) -> None:
        """While draining: returns once every call in flight has been answered, or after `within` seconds."""
        if self.pending:
            self._quiet.clear()
            await woken(self._quiet, within)

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
                            self.done(reply.call_id)
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
            pending = self.done(call_id)
            if pending is not None:
                body = errors.DeadlineExceeded(
                    "no outcome before the call's deadline; it may or may not have run"
                ).body()
                pending.push(CallReply(call_id, ReplyKind.ERROR, body))

    async def beat(self, interval: float) -> None:
        """This replica's heartbeat: while it advances, workers run the calls it sends and reply to it. It also
        measures Valkey's clock against this host's."""
        key = streams.replica_beat(self.replica.decode())
        alive = streams.ingress_alive(self.replica.decode())  # what `muster status` reads
        failing = False
        while True:
            try:
                sent = time.time()
                beat = self.outbox.send(b"INCR", key)
                self.outbox.post(b"EXPIRE", key, streams.BEAT_TTL)
                self.outbox.post(b"SADD", streams.REPLICAS, self.replica)  # again: Valkey may have lost it
                status = orjson.dumps({"pending": len(self.pending)})
                self.outbox.post(b"SET", alive, status, b"PX", int(interval * streams.ALIVE_BEATS * 1000))
                clock = self.outbox.send(b"TIME")
                await beat
                seconds, micros = await clock
                received = time.time()
                if received - sent < CLOCK_PRECISION:
                    self.valkey_clock = int(seconds) + int(micros) / 1e6 - (sent + received) / 2
                failing = False
            except ConnectionError as exc:
                if not failing:
                    logger.warning("the replica's heartbeat failed: %s", exc)
                failing = True
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """A clean stop: this replica's reply stream goes, nobody will read it, and its heartbeat says it stopped
        (workers then run none of its calls still queued)."""
        replica = self.replica.decode()
        try:
            self.outbox.post(b"SET", streams.replica_beat(replica), streams.BEAT_STOPPED, b"EX", streams.BEAT_TTL)
            self.outbox.post(b"DEL", streams.ingress_alive(replica))
            await self.outbox.send(b"DEL", streams.replies(replica))
        except ConnectionError as exc:  # they expire
            logger.info("could not remove the reply stream: %s", exc)

    def abandon(self) -> int:
        """Answers every call still waiting, at the end of a drain, and cancels it, so that none runs after its
        caller was told otherwise. A call that is safe to run twice may simply be retried; any other may have run."""
        left, self.pending = self.pending, {}
        self.per_server.clear()
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
