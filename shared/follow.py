"""Following streams without a consumer group: XREAD from a cursor per stream, through reconnects.

    follow = Follow(client, [streams.CONTROL])
    await follow.start()        # optional: from here on, nothing written to the streams is missed
    async for batch in follow:  # what one read brought, as XREAD answers it; [] when a read found nothing
        for stream, entries in batch:
            for entry_id, fields in entries: ...

Batches are the reply as redis-py returns it, so following costs no allocation per entry (the ingress reads
its replies this way). An empty batch every `block_ms` at the most lets a reader do timed work in the same loop.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

Fields = dict[bytes, bytes]
Batch = list[tuple[bytes, list[tuple[bytes, Fields]]]]  # (stream, [(entry id, fields), ...]) per stream
BEGINNING = b"0-0"
MAX_BACKOFF = 1.0  # a reader resumes within a second of Valkey coming back (a restart, a failover)


async def last_id(client: Redis, stream: str | bytes) -> bytes:
    """The id of the stream's newest entry; 0-0 for an empty or missing stream."""
    newest: Any = await client.xrevrange(stream, count=1)
    return newest[0][0] if newest else BEGINNING


class Follow:
    """Reads streams from where it left off. A cursor starts after the stream's newest entry when the follow starts
    (`since=None`), or at `since` (BEGINNING: everything). A failed read is logged and retried with backoff."""

    def __init__(
        self,
        client: Redis,
        names: Iterable[str | bytes],
        *,
        since: bytes | None = None,
        count: int = 100,
        block_ms: int = 1000,
    ) -> None:
        self.client = client
        self.cursors: dict[bytes, bytes | None] = {
            name.encode() if isinstance(name, str) else name: since for name in names
        }
        self.count = count
        self.block_ms = block_ms
        self.failures = 0

    async def start(self) -> None:
        for name, cursor in self.cursors.items():
            if cursor is None:
                self.cursors[name] = await last_id(self.client, name)

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[Batch]:
        while True:
            try:
                if None in self.cursors.values():
                    await self.start()
                batch: Any = await self.client.xread(self.cursors, count=self.count, block=self.block_ms)  # type: ignore[arg-type]
            except (RedisError, OSError) as exc:  # Valkey unreachable, restarting, or gone for a while
                await self._back_off(exc)
                continue
            self.failures = 0
            if not batch:
                yield []
                continue
            for stream, entries in batch:
                if entries:
                    self.cursors[stream] = entries[-1][0]
            yield batch

    async def _back_off(self, exc: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            logger.warning("reading %s failed: %s; trying again", b", ".join(self.cursors).decode(), exc)
        await asyncio.sleep(min(MAX_BACKOFF, 0.25 * 2**self.failures))
