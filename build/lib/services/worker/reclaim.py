"""Liveness and recovery: each worker keeps a heartbeat key alive and takes over the calls of workers whose
heartbeat is gone.

Entries are claimed by consumer rather than by idle time, so a call that legitimately runs for minutes is
never taken from a live worker.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from services.worker.dispatch import Dispatcher, Lane
from shared import errors, streams
from shared.messages import Call, Reply, ReplyKind

logger = logging.getLogger(__name__)

CLAIM_BATCH = 100
FORGET_IDLE_MS = 3600_000  # a dead consumer with nothing pending is removed from the group after an hour


class Reclaimer:
    def __init__(
        self,
        client: Redis,
        dispatcher: Dispatcher,
        lanes: Callable[[], list[Lane]],
        *,
        worker_id: str,
        heartbeat: float,
        dead_after: float,
        interval: float,
        max_deliveries: int,
    ) -> None:
        self.client = client
        self.dispatcher = dispatcher
        self.lanes = lanes
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
            except Exception as exc:
                logger.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.heartbeat)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for lane in self.lanes():
                try:
                    await self.reclaim(lane)
                except Exception as exc:
                    logger.warning("reclaiming on %s failed: %s", lane.server, exc)

    async def reclaim(self, lane: Lane) -> int:
        taken = 0
        consumers: Any = await self.client.xinfo_consumers(lane.stream, streams.GROUP_WORKERS)
        for consumer in consumers:
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name == self.worker_id or await self.client.exists(streams.worker_alive(name)):
                continue
            if not consumer["pending"]:
                if consumer["idle"] > FORGET_IDLE_MS:
                    await self.client.xgroup_delconsumer(lane.stream, streams.GROUP_WORKERS, name)
                continue
            taken += await self._take_over(lane, name)
        return taken

    async def _take_over(self, lane: Lane, dead: str) -> int:
        rows: Any = await self.client.xpending_range(
            lane.stream, streams.GROUP_WORKERS, min="-", max="+", count=CLAIM_BATCH, consumername=dead
        )
        if not rows:
            return 0
        deliveries = {row["message_id"]: row["times_delivered"] for row in rows}
        # min_idle_time: if another worker claimed these a moment ago, it wins and this claim takes nothing
        claimed: Any = await self.client.xclaim(
            lane.stream, streams.GROUP_WORKERS, self.worker_id, min_idle_time=1000, message_ids=list(deliveries)
        )
        logger.warning("worker %s is gone: took over %d of its calls on %s", dead, len(claimed), lane.server)
        entries = []
        for entry_id, fields in claimed:
            if not fields:  # trimmed away: nothing left to run or to answer
                self.dispatcher.outbox.post(b"XACK", lane.stream, streams.GROUP_WORKERS, entry_id)
                self.dispatcher.outbox.post(b"DECR", lane.depth)
            elif deliveries.get(entry_id, 1) >= self.max_deliveries:
                self._dead_letter(lane, entry_id, fields, deliveries[entry_id])
            else:
                entries.append((entry_id, fields))
        self.reclaimed += len(entries)
        if entries:
            await self.dispatcher.take(lane, entries, redelivered=True)
        return len(claimed)

    def _dead_letter(self, lane: Lane, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        self.dead_lettered += 1
        logger.error(
            "call %s on %s was delivered %d times; moved to the dead-letter stream", entry_id, lane.server, deliveries
        )
        out = self.dispatcher.outbox
        flat = [x for pair in fields.items() for x in pair]
        out.post(
            b"XADD",
            streams.DEAD_LETTER,
            b"MAXLEN",
            b"~",
            10_000,
            b"*",
            *flat,
            b"entry",
            entry_id,
            b"deliveries",
            deliveries,
        )
        try:
            call = Call.from_fields(fields)
        except (KeyError, ValueError):
            call = None
        if call is not None:
            body = errors.OutcomeUnknown(f"the call failed on {deliveries} workers in a row and was set aside").body()
            out.reply(call.replica, Reply(call.rid, ReplyKind.ERROR, body))
        out.post(b"XACK", lane.stream, streams.GROUP_WORKERS, entry_id)
        out.post(b"DECR", lane.depth)
