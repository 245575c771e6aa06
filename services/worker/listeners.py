"""The GET streams of agent sessions' upstream sessions, where an upstream sends what belongs to no call.

One worker at a time holds each (a lease in Valkey, renewed while held): the worker that opened the upstream
session, or one that later finds the lease free when it uses the session. What arrives is delivered in order by
standalone.py. A stream that ends is resumed (Last-Event-ID); one whose session the upstream lost is held again
on the new session; an upstream that answers a GET with anything but a stream (405) is not asked again for a while.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from services.worker.standalone import Standalone
from services.worker.upstream import Bound, ForeignSession, Unbound, UnknownServer, Upstream
from shared import streams
from shared.http1 import HttpError
from shared.lifecycle import Background
from shared.upstream import SessionLost, UpstreamFailure
from shared.valkey import COMPARE_AND_DELETE, Outbox

logger = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
RENEW_SECONDS = 3.0
NO_STREAM_SECONDS = 300.0  # an upstream that answered a GET without a stream is not asked again for this long
BACKOFF_MAX = 30.0
QUEUED = 1000  # messages read from one stream and not yet delivered: beyond this, notifications are dropped

# KEYS: a lease. ARGV: holder, ms. Extends the lease only while this holder has it.
RENEW = b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

Reopen = Callable[[Upstream, Bound, float], Awaitable[None]]
Message = tuple[dict[str, Any], bytes]
GIVE_UP = (ForeignSession, Unbound, UnknownServer, HttpError, UpstreamFailure, OSError)


@dataclass(eq=False)
class Held:
    upstream: Upstream
    bound: Bound
    lease: bytes
    established: "asyncio.Future[None]"
    queue: "asyncio.Queue[Message]" = field(default_factory=lambda: asyncio.Queue(QUEUED))
    last_event_id: bytes | None = None
    failures: int = 0
    task: "asyncio.Task[None] | None" = None


class Listeners:
    def __init__(self, outbox: Outbox, worker_id: str, standalone: Standalone, *, limit: int) -> None:
        self.outbox = outbox
        self.worker_id = worker_id.encode()
        self.standalone = standalone
        self.limit = limit  # GET streams this worker holds at once
        self.held: dict[tuple[str, bytes], Held] = {}
        self.tasks = Background()
        self.releases = Background()

    def _may_hold(self, upstream: Upstream, bound: Bound) -> bool:
        loop = asyncio.get_running_loop()
        bound.lease_at = loop.time() + LEASE_SECONDS
        return (
            (upstream.name, bound.agent) not in self.held
            and len(self.held) < self.limit
            and loop.time() >= upstream.streams_after
            and not upstream.removed
        )

    def _lease(self, upstream: Upstream, bound: Bound) -> "asyncio.Future[Any]":
        key = streams.listener(upstream.name, bound.agent.decode())
        return self.outbox.send(b"SET", key, self.worker_id, b"NX", b"PX", int(LEASE_SECONDS * 1000))

    def consider(self, upstream: Upstream, bound: Bound, reopen: Reopen) -> None:
        """On each use of a bound session, at most once per lease period: hold its GET stream if nobody does.
        The call does not wait for the answer."""
        if asyncio.get_running_loop().time() < bound.lease_at or not self._may_hold(upstream, bound):
            return

        def leased(future: "asyncio.Future[Any]") -> None:
            if not future.cancelled() and future.exception() is None and future.result():
                self._start(upstream, bound, reopen)

        self._lease(upstream, bound).add_done_callback(leased)

    async def hold(self, upstream: Upstream, bound: Bound, reopen: Reopen, *, wait: float) -> None:
        """Holds the GET stream of a session this worker just opened, waiting up to `wait` seconds until it is
        established (or refused)."""
        try:
            if not self._may_hold(upstream, bound) or not await self._lease(upstream, bound):
                return
        except (RedisError, ConnectionError, OSError) as exc:  # the call goes on; the stream is tried again later
            logger.warning("could not take the lease of a GET stream of %s: %s", upstream.name, exc)
            return
        established = self._start(upstream, bound, reopen)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.shield(established)

    def _start(self, upstream: Upstream, bound: Bound, reopen: Reopen) -> "asyncio.Future[None]":
        lease = streams.listener(upstream.name, bound.agent.decode()).encode()
        established: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        held = self.held[upstream.name, bound.agent] = Held(upstream, bound, lease, established)
        held.task = self.tasks.spawn(self._hold(held, reopen))
        return established

    async def _hold(self, held: Held, reopen: Reopen) -> None:
        upstream, bound = held.upstream, held.bound
        delivering = asyncio.create_task(self._deliver(held))
        try:
            while upstream.bound.get(bound.agent) is bound and not upstream.removed:
                if not bound.session.is_open:
                    await reopen(upstream, bound, asyncio.get_running_loop().time() + upstream.record.timeout)
                    held.last_event_id = None
                if not await self._listen(held):
                    return
                await asyncio.sleep(min(BACKOFF_MAX, 0.25 * 2 ** min(held.failures, 7)))
        except GIVE_UP as exc:
            logger.info("stopped holding the GET stream of %s for %s…: %s", upstream.name, bound.agent[:8], exc)
        finally:
            delivering.cancel()
            if not held.established.done():
                held.established.set_result(None)
            if self.held.get((upstream.name, bound.agent)) is held:
                del self.held[upstream.name, bound.agent]
            self.releases.spawn(self._release(held.lease))

    async def _listen(self, held: Held) -> bool:
        """One GET of the stream, until it ends; False when it should not be asked for again."""
        upstream, session = held.upstream, held.bound.session

        def on_head(status: int, headers: dict[bytes, bytes]) -> None:
            if not held.established.done():
                held.established.set_result(None)

        def on_message(message: dict[str, Any], data: bytes) -> None:
            try:
                held.queue.put_nowait((message, data))
            except asyncio.QueueFull:
                logger.warning("%s sends faster on its GET stream than it can be delivered; dropped", upstream.name)

        try:
            response = await session.listen(on_message, on_head=on_head, last_event_id=held.last_event_id)
        except SessionLost:
            held.failures = 0  # opened again at once, at the top of the loop
            return True
        except (HttpError, UpstreamFailure, OSError) as exc:
            held.failures += 1
            logger.info("the GET stream of %s broke: %s", upstream.name, exc)
            return True
        if response.status != 200:
            upstream.streams_after = asyncio.get_running_loop().time() + NO_STREAM_SECONDS
            logger.info("%s offers no GET stream (HTTP %d)", upstream.name, response.status)
            return False
        held.failures = 0 if response.events else held.failures + 1
        held.last_event_id = response.last_event_id or held.last_event_id
        return True

    async def _deliver(self, held: Held) -> None:
        while True:
            message, data = await held.queue.get()
            try:
                await self.standalone.deliver(held.upstream, held.bound, message, data)
            except (RedisError, ConnectionError, HttpError, UpstreamFailure, OSError) as exc:
                logger.warning("delivering what %s sent outside a call failed: %s", held.upstream.name, exc)

    async def _release(self, lease: bytes) -> None:
        try:
            await self.outbox.script(COMPARE_AND_DELETE, (lease,), (self.worker_id,))
        except (RedisError, ConnectionError, OSError) as exc:  # it expires by itself
            logger.info("releasing a GET stream lease failed: %s", exc)

    async def renew(self) -> None:
        """Keeps the leases of the streams held here; a stream whose lease another worker has is let go."""
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            held = list(self.held.values())
            ms = int(LEASE_SECONDS * 1000)
            results = await asyncio.gather(
                *(self.outbox.script(RENEW, (h.lease,), (self.worker_id, ms)) for h in held), return_exceptions=True
            )
            for h, kept in zip(held, results, strict=True):
                if kept == 0:
                    logger.warning("lost the lease of a GET stream of %s; letting it go", h.upstream.name)
                    self._cancel(h)

    @staticmethod
    def _cancel(held: Held) -> None:
        if held.task is not None:
            held.task.cancel()  # its own clean-up forgets it and releases the lease

    def stop(self, agent: bytes) -> None:
        """Lets go of the GET streams of an agent session that ended."""
        for key, held in list(self.held.items()):
            if key[1] == agent:
                self._cancel(held)

    def drop(self, server: str) -> None:
        """Lets go of the GET streams of a server that is gone, or whose address changed."""
        for key, held in list(self.held.items()):
            if key[0] == server:
                self._cancel(held)

    async def close(self, seconds: float) -> None:
        """The worker stops: every stream is let go, and its lease released for another worker to take."""
        self.tasks.cancel()
        await self.tasks.wait(seconds)
        await self.releases.wait(seconds)
