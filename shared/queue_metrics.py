"""The queue gauges, read from Valkey when /metrics is scraped rather than counted per call.

One pipeline per scrape: XLEN and XINFO GROUPS of every server's call stream, its depth counter, and XLEN of
the dead-letter stream. The /metrics handler awaits `refresh()` (bounded by `timeout`), then the registry's
collection reads the snapshot it left. If Valkey does not answer, the queue gauges are absent from that scrape
and muster_valkey_up is 0: an old value presented as current would hide a queue that is growing.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import streams
from shared.metrics import (
    DEAD_LETTER_LENGTH,
    QUEUE_DEPTH,
    STREAM_CONSUMERS,
    STREAM_LAG,
    STREAM_LENGTH,
    STREAM_PENDING,
    VALKEY_UP,
    Spec,
)

logger = logging.getLogger(__name__)

PER_SERVER = (QUEUE_DEPTH, STREAM_LENGTH, STREAM_PENDING, STREAM_LAG, STREAM_CONSUMERS)


@dataclass(slots=True)
class Snapshot:
    up: bool = False
    dead_letters: int | None = None
    servers: dict[str, dict[str, float]] = field(default_factory=dict)  # server -> spec name -> value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _group(reply: Any) -> dict[str, Any] | None:
    """The workers' group out of an XINFO GROUPS reply (redis-py parses each group into a dict)."""
    if isinstance(reply, Exception) or not isinstance(reply, list):
        return None
    for group in reply:
        if isinstance(group, dict) and _text(group.get("name", b"")) == streams.GROUP_WORKERS:
            return group
    return None


class QueueCollector(Collector):
    """Collects the queue gauges of the servers `servers()` names, from the snapshot `refresh()` took."""

    def __init__(self, client: Redis, servers: Callable[[], Iterable[str]], *, timeout: float = 1.0) -> None:
        self.client = client
        self.servers = servers
        self.timeout = timeout
        self.snapshot = Snapshot()

    def register(self, registry: CollectorRegistry) -> "QueueCollector":
        registry.register(self)
        return self

    async def refresh(self) -> None:
        names = sorted(set(self.servers()))
        try:
            async with asyncio.timeout(self.timeout):
                replies = await self._read(names)
        except (RedisError, OSError, TimeoutError) as exc:  # the scrape says so: muster_valkey_up 0
            logger.warning("queue gauges not read from valkey: %s", exc or type(exc).__name__)
            self.snapshot = Snapshot()
            return
        snapshot = Snapshot(up=True)
        dead = replies[-1]
        snapshot.dead_letters = dead if isinstance(dead, int) else None
        for i, server in enumerate(names):
            length, groups, depth = replies[3 * i : 3 * i + 3]
            values: dict[str, float] = {}
            if isinstance(length, int):
                values[STREAM_LENGTH.name] = length
            if depth is not None and not isinstance(depth, Exception):
                values[QUEUE_DEPTH.name] = max(int(depth), 0)
            group = _group(groups)
            if group is not None:
                values[STREAM_PENDING.name] = int(group.get("pending", 0))
                values[STREAM_CONSUMERS.name] = int(group.get("consumers", 0))
                lag = group.get("lag")
                if lag is not None:  # Valkey cannot tell the lag after entries were deleted out of order
                    values[STREAM_LAG.name] = int(lag)
            snapshot.servers[server] = values
        self.snapshot = snapshot

    async def _read(self, names: list[str]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for server in names:
            stream = streams.calls(server)
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
            pipe.get(streams.depth(server))
        pipe.xlen(streams.DEAD_LETTER)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        yield _family(VALKEY_UP, [((), 1.0 if snapshot.up else 0.0)])
        if not snapshot.up:
            return
        for spec in PER_SERVER:
            yield _family(spec, [((s,), v[spec.name]) for s, v in snapshot.servers.items() if spec.name in v])
        if snapshot.dead_letters is not None:
            yield _family(DEAD_LETTER_LENGTH, [((), float(snapshot.dead_letters))])

    def describe(self) -> Iterator[Metric]:
        for spec in (VALKEY_UP, *PER_SERVER, DEAD_LETTER_LENGTH):
            yield _family(spec, [])


def _family(spec: Spec, samples: Iterable[tuple[tuple[str, ...], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    for labels, value in samples:
        family.add_metric(labels, value)
    return family
