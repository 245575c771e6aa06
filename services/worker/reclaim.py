"""Liveness and recovery: each worker keeps a heartbeat key alive and takes over the calls of workers whose
heartbeat is gone.

Entries are claimed by consumer rather than by idle time, so a call that legitimately runs for minutes is
never taken from a live worker.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.worker.dispatch import Dispatcher
from services.worker.upstream import Upstream
from shared import streams

logger = logging.getLogger(__name__)

CLAIM_BATCH = 100
FORGET_IDLE_MS = 3600_000  # a dead consumer with nothing pending is removed from the group after an hour
CLAIM_MIN_IDLE_MS = 1000  # if another worker claimed these a moment ago, it wins and this claim takes nothing


class Reclaimer:
    def __init__(
        self,
        client: Redis,
        dispatcher: Dispatcher,
        upstreams: Callable[[], Iterable[Upstream]],
        *,
        worker_id: str,
        heartbeat: float,
        dead_after: float,
        interval: float,
        max_deliveries: int,
    ) -> None:
        self.client = client
        self.dispatcher = dispatcher
        self.upstreams = upstreams
        self.worker_id = worker_id
        self.heartbeat = heartbeat
        self.dead_after_ms = int(dead_after * 1000)
        self.interval = interval
        self.max_deliveries = max_deliveries
        self.reclaimed = 0
        self.dead_lettered = 0

    async def beat(self) -> None:
        await self.client.set(streams.worker_alive(self.worker_id), b"1", px=self.dead_after_ms)

    async def run_heartbeat(self) -> None:
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                logger.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.heartbeat)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for upstream in list(self.upstreams()):
                try:
                    await self.reclaim(upstream)
                except (RedisError, OSError) as exc:
                    logger.warning("reclaiming on %s failed: %s", upstream.name, exc)

    async def reclaim(self, upstream: Upstream) -> int:
        """Takes over the calls that dead workers held on this server's queue; returns how many it claimed."""
        queue = upstream.lane.queue
        taken = 0
        consumers: Any = await self.client.xinfo_consumers(queue.stream, streams.GROUP_WORKERS)
        for consumer in consumers:
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name == self.worker_id or await self.client.exists(streams.worker_alive(name)):
                continue
            if not consumer["pending"]:
                if consumer["idle"] > FORGET_IDLE_MS:
                    await self.client.xgroup_delconsumer(queue.stream, streams.GROUP_WORKERS, name)
                continue
            taken += await self._take_over(upstream, name)
        return taken

    async def _take_over(self, upstream: Upstream, dead: str) -> int:
        queue = upstream.lane.queue
        rows: Any = await self.client.xpending_range(
            queue.stream, streams.GROUP_WORKERS, min="-", max="+", count=CLAIM_BATCH, consumername=dead
        )
        if not rows:
            return 0
        deliveries = {row["message_id"]: row["times_delivered"] for row in rows}
        claimed: Any = await self.client.xclaim(
            queue.stream,
            streams.GROUP_WORKERS,
            self.worker_id,
            min_idle_time=CLAIM_MIN_IDLE_MS,
            message_ids=list(deliveries),
        )
        logger.warning("worker %s is gone: took over %d of its calls on %s", dead, len(claimed), upstream.name)
        outcomes = self.dispatcher.outcomes
        entries = []
        for entry_id, fields in claimed:
            if not fields:
                outcomes.discard(queue, entry_id, "trimmed away: nothing left to run or to answer")
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
        return len(claimed)
