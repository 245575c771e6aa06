"""Recovery: the calls of workers that died are taken over, each server's in a task of its own, so that a full
lane delays only its own server's takeover; a worker restarted under the same id first takes back what its
previous incarnation held, and any worker takes back entries pending for it that it does not hold. Replies to
ingress replicas that died are removed.

Entries are claimed by consumer, judged dead by its heartbeat (liveness.py), never by idle time: a call that
legitimately runs for minutes is never taken from a live worker.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.worker.dispatch import Dispatcher
from services.worker.liveness import Liveness
from services.worker.upstream import Upstream
from shared import streams
from shared.lifecycle import Background

logger = logging.getLogger(__name__)

CLAIM_BATCH = 100
FORGET_IDLE_MS = 3600_000  # a dead consumer with nothing pending is removed from the group after an hour
CLAIM_MIN_IDLE_MS = 1000  # if another worker claimed these a moment ago, it wins and this claim takes nothing
ADOPT_ROUNDS = 100  # claims in a row by one takeover, at most

Consumers = dict[str, list[tuple[str, int, int]]]  # server -> (consumer, pending, idle ms)


class Reclaimer:
    def __init__(
        self,
        client: Redis,
        dispatcher: Dispatcher,
        upstreams: Callable[[], Iterable[Upstream]],
        liveness: Liveness,
        *,
        worker_id: str,
        interval: float,
        max_deliveries: int,
    ) -> None:
        self.client = client
        self.dispatcher = dispatcher
        self.upstreams = upstreams
        self.liveness = liveness
        self.worker_id = worker_id
        self.interval = interval
        self.max_deliveries = max_deliveries
        self.lanes: dict[str, asyncio.Task[Any]] = {}  # server -> the takeover running on its lane
        self.buried: set[bytes] = set()  # replicas found gone, their reply streams removed
        self.background = Background()
        self.reclaimed = 0
        self.dead_lettered = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except (RedisError, OSError) as exc:
                self.liveness.lost_contact()
                logger.warning("looking for dead workers failed: %s", exc)

    def adopt(self, upstream: Upstream) -> None:
        """Take back, as redeliveries, the entries pending for this consumer that this process does not hold:
        what a previous incarnation of this worker (same id) held, or what Valkey forgot was finished (a restart
        with `appendfsync everysec`). Nobody else takes them while this worker's heartbeat advances."""
        self._on_lane(upstream, self.worker_id, CLAIM_MIN_IDLE_MS)

    async def sweep(self) -> None:
        """One look at every server's consumers and the replicas calls came from; takes over from the dead."""
        upstreams = list(self.upstreams())
        consumers = await self._consumers(upstreams)
        replicas: Any = await self.client.smembers(streams.REPLICAS)
        self.liveness.watch_replicas(set(replicas))
        others = {name for rows in consumers.values() for name, _, _ in rows if name != self.worker_id}
        keys = [*self.liveness.watched(), *(streams.worker_beat(name).encode() for name in others)]
        values: list[Any] = await self.client.mget(keys)
        self.liveness.observe(dict(zip(keys, values, strict=True)))
        for upstream in upstreams:
            for name, pending, idle in consumers.get(upstream.name, ()):
                if name == self.worker_id:
                    if pending > sum(1 for server, _ in self.dispatcher.held if server == upstream.name):
                        self.adopt(upstream)  # pending here, held by nobody: Valkey lost a FINISH (everysec)
                    continue
                if not self.liveness.dead(streams.worker_beat(name).encode()):
                    continue
                if pending:
                    self._on_lane(upstream, name, CLAIM_MIN_IDLE_MS)
                elif idle > FORGET_IDLE_MS:
                    await self.client.xgroup_delconsumer(upstream.lane.queue.stream, streams.GROUP_WORKERS, name)
        await self._bury_replicas()

    async def _consumers(self, upstreams: list[Upstream]) -> Consumers:
        pipe = self.client.pipeline(transaction=False)
        for upstream in upstreams:
            pipe.xinfo_consumers(upstream.lane.queue.stream, streams.GROUP_WORKERS)
        replies = await pipe.execute(raise_on_error=False)
        found: Consumers = {}
        for upstream, reply in zip(upstreams, replies, strict=True):
            if isinstance(reply, ResponseError):  # no group (yet, or any more): the lane's reader recreates it
                continue
            if isinstance(reply, Exception):
                raise reply
            found[upstream.name] = [(_text(c["name"]), c["pending"], c["idle"]) for c in reply]
        return found

    async def _bury_replicas(self) -> None:
        """A replica that died takes its callers with it: nobody reads its reply stream any more. It stays in
        muster:replicas, so that every worker keeps refusing its calls, until its heartbeat key expired."""
        self.buried &= self.liveness.replicas
        gone = [r for r in self.liveness.gone_replicas() if r not in self.buried]
        if gone:
            await self.client.delete(*(streams.replies(r.decode()) for r in gone))
            self.buried.update(gone)
            logger.warning("ingress replicas gone, reply streams removed: %s", b", ".join(gone).decode())
        expired = [r for r in self.buried if self.liveness.replica_expired(r)]
        if expired:
            await self.client.srem(streams.REPLICAS, *expired)

    def _on_lane(self, upstream: Upstream, consumer: str, min_idle_ms: int) -> None:
        """Starts a takeover on the server's lane, unless one runs there already (the next sweep comes back)."""
        running = self.lanes.get(upstream.name)
        if running is None or running.done():
            self.lanes[upstream.name] = self.background.spawn(self._take_over(upstream, consumer, min_idle_ms))

    async def _take_over(self, upstream: Upstream, consumer: str, min_idle_ms: int) -> None:
        own = consumer == self.worker_id
        try:
            for _ in range(ADOPT_ROUNDS):
                found, claimed = await self._claim(upstream, consumer, min_idle_ms)
                if claimed < found and own:  # claimed a moment ago by the previous incarnation: soon
                    await asyncio.sleep(min_idle_ms / 1000)
                elif found < CLAIM_BATCH or claimed < found:  # all taken, or the rest by someone else
                    return
        except (RedisError, OSError) as exc:
            logger.warning("taking over the calls of %s on %s failed: %s", consumer, upstream.name, exc)

    async def _claim(self, upstream: Upstream, consumer: str, min_idle_ms: int) -> tuple[int, int]:
        """Claims a batch of the consumer's calls on this server and runs them; returns how many it found and
        how many of them it claimed."""
        queue = upstream.lane.queue
        held = {e for s, e in self.dispatcher.held if s == queue.server} if consumer == self.worker_id else set()
        rows: Any = await self.client.xpending_range(
            queue.stream, streams.GROUP_WORKERS, "-", "+", CLAIM_BATCH + len(held), consumername=consumer
        )
        rows = [row for row in rows if row["message_id"] not in held][:CLAIM_BATCH]
        if not rows:
            return 0, 0
        deliveries = {row["message_id"]: row["times_delivered"] for row in rows}
        claimed: Any = await self.client.xclaim(
            queue.stream, streams.GROUP_WORKERS, self.worker_id, min_idle_time=min_idle_ms, message_ids=list(deliveries)
        )
        if claimed and consumer == self.worker_id:
            logger.warning("took back %d calls on %s held before this worker restarted", len(claimed), queue.server)
        elif claimed:
            logger.warning("worker %s is gone: took over %d of its calls on %s", consumer, len(claimed), queue.server)
        outcomes = self.dispatcher.outcomes
        entries = []
        for entry_id, fields in claimed:
            if not fields:
                outcomes.discard(queue, entry_id, "deleted: it was answered already")
            elif deliveries.get(entry_id, 1) >= self.max_deliveries:
                self.dead_lettered += 1
                self.dispatcher.telemetry.dead_lettered(upstream.name)
                outcomes.dead_letter(queue, entry_id, fields, deliveries[entry_id])
            else:
                entries.append((entry_id, fields))
        self.reclaimed += len(entries)
        self.dispatcher.telemetry.redelivered(upstream.name, len(entries))
        if entries:
            await self.dispatcher.take(upstream, entries, redelivered=True)
        return len(rows), len(claimed)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
