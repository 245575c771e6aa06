"""The queue gauges against a real valkey-server: streams, a consumer group, deliveries and acknowledgements."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from shared import streams
from shared.queue_metrics import QueueCollector
from shared.valkey import connect
from tests.shared.conftest import ValkeyServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(valkey_server: ValkeyServer) -> AsyncIterator[Redis]:
    client = connect(valkey_server.url)
    yield client
    await client.aclose()


def gauges(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, s.labels.get("server", ""))] = s.value
    return out


async def test_length_pending_lag_depth_and_dead_letters_per_server(client: Redis) -> None:
    busy, idle = streams.calls("busy"), streams.calls("idle")
    await client.xgroup_create(busy, streams.GROUP_WORKERS, id="0", mkstream=True)
    await client.xgroup_create(idle, streams.GROUP_WORKERS, id="0", mkstream=True)
    for n in range(5):
        await client.xadd(busy, {"n": n})
    await client.set(streams.depth("busy"), 5)
    delivered: Any = await client.xreadgroup(streams.GROUP_WORKERS, "w1", {busy: ">"}, count=3)
    first: bytes = delivered[0][1][0][0]
    await client.xack(busy, streams.GROUP_WORKERS, first)  # 3 delivered, 1 of them acknowledged
    await client.xreadgroup(streams.GROUP_WORKERS, "w2", {idle: ">"}, count=1)
    await client.xadd(streams.DEAD_LETTER, {"n": 1})

    registry = CollectorRegistry()
    collector = QueueCollector(client, lambda: ["busy", "idle", "never-used"]).register(registry)
    await collector.refresh()
    g = gauges(registry)
    assert g[("muster_valkey_up", "")] == 1
    assert g[("muster_stream_length", "busy")] == 5 and g[("muster_stream_length", "idle")] == 0
    assert g[("muster_stream_pending", "busy")] == 2
    assert g[("muster_stream_lag", "busy")] == 2
    assert g[("muster_stream_consumers", "busy")] == 1 and g[("muster_stream_consumers", "idle")] == 1
    assert g[("muster_queue_depth", "busy")] == 5
    assert ("muster_queue_depth", "idle") not in g  # no counter yet: nothing was ever accepted
    assert g[("muster_stream_length", "never-used")] == 0  # XLEN of a missing stream is 0
    assert ("muster_stream_pending", "never-used") not in g  # no group: nothing to say
    assert g[("muster_dead_letter_length", "")] == 1


async def test_without_valkey_the_queue_gauges_are_absent_and_valkey_up_is_zero(
    client: Redis, valkey_server: ValkeyServer
) -> None:
    await client.xgroup_create(streams.calls("s"), streams.GROUP_WORKERS, id="0", mkstream=True)
    registry = CollectorRegistry()
    collector = QueueCollector(client, lambda: ["s"], timeout=1.0).register(registry)
    await collector.refresh()
    assert gauges(registry)[("muster_stream_length", "s")] == 0
    valkey_server.stop()
    await collector.refresh()
    assert gauges(registry) == {("muster_valkey_up", ""): 0.0}
    valkey_server.start()
    await collector.refresh()
    assert gauges(registry)[("muster_valkey_up", "")] == 1
