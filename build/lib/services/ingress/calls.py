"""Calls in flight from this replica: enqueued on their server's stream, answered on this replica's reply stream.

One reader task demultiplexes the reply stream to the waiting requests, and one sweeper answers the calls
whose deadline passed, so no request needs a timer or a task of its own.
"""

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from shared import errors, streams
from shared.messages import Call, Reply, ReplyKind
from shared.valkey import ENQUEUE, Outbox

logger = logging.getLogger(__name__)

# Past the deadline the worker answers by itself; the sweeper waits this much longer before it
# answers in the worker's place.
SWEEP_GRACE = 2.0


class Pending:
    """The replies of one call, in order, for the request that waits for them."""

    __slots__ = ("replies", "waiter")

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def push(self, reply: Reply) -> None:
        self.replies.append(reply)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next(self) -> Reply:
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
        *,
        queue_limit: int,
        max_pending: int,
        retry_after: float,
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.replica = replica.encode()
        self.stream = streams.replies(replica).encode()
        self.queue_limit = queue_limit
        self.max_pending = max_pending
        self.retry_after = retry_after
        self.pending: dict[bytes, Pending] = {}
        # Where a notification for a session (not for a call) goes: the GET stream this replica holds for it.
        self.on_session: Callable[[str, bytes], bool] = lambda session, body: False
        self._deadlines: list[tuple[float, bytes]] = []
        self._ids = itertools.count(1)

    def new_rid(self) -> bytes:
        return b"%d" % next(self._ids)

    async def submit(self, call: Call) -> Pending:
        """Enqueue the call; raises QueueFull when its server's queue or this replica is at its bound."""
        if len(self.pending) >= self.max_pending:
            raise errors.QueueFull("this muster replica has too many calls in flight; retry shortly", self.retry_after)
        pending = self.pending[call.rid] = Pending()
        heapq.heappush(self._deadlines, (call.deadline_ms / 1000 + SWEEP_GRACE, call.rid))
        server = call.server.decode()
        try:
            entry = await self.outbox.script(
                ENQUEUE,
                (streams.calls(server), streams.depth(server)),
                (self.queue_limit, streams.CALLS_MAXLEN, *call.fields()),
            )
        except BaseException:
            self.pending.pop(call.rid, None)
            raise
        if entry is None:
            self.pending.pop(call.rid, None)
            raise errors.QueueFull(
                f"the queue of {server} is full ({self.queue_limit} calls); retry shortly", self.retry_after
            )
        return pending

    def done(self, rid: bytes) -> None:
        self.pending.pop(rid, None)

    async def read_replies(self) -> None:
        last = b"0-0"  # the replica id is new, so everything in the stream is for this process
        while True:
            try:
                response: Any = await self.client.xread({self.stream: last}, count=1024, block=5000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("reading replies failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for _, entries in response:
                for entry_id, fields in entries:
                    last = entry_id
                    try:
                        reply = Reply.from_fields(fields)
                    except (KeyError, ValueError):
                        logger.error("malformed reply %s dropped", entry_id)
                        continue
                    if reply.kind is ReplyKind.SESSION:
                        self.on_session(reply.rid.decode(), reply.body)
                        continue
                    pending = self.pending.get(reply.rid)
                    if pending is not None:
                        pending.push(reply)
                        if reply.final:
                            del self.pending[reply.rid]

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.time()
            if len(self._deadlines) > 4 * len(self.pending) + 1024:  # most entries belong to answered calls
                self._deadlines = [d for d in self._deadlines if d[1] in self.pending]
                heapq.heapify(self._deadlines)
            while self._deadlines and self._deadlines[0][0] <= now:
                _, rid = heapq.heappop(self._deadlines)
                pending = self.pending.pop(rid, None)
                if pending is not None:
                    body = errors.DeadlineExceeded(
                        "no outcome before the call's deadline; it may or may not have run"
                    ).body()
                    pending.push(Reply(rid, ReplyKind.ERROR, body))
