"""Publishing server records, against a real valkey-server: groups first, then records, then one event."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from services.discovery.publisher import Publisher
from shared import records, streams
from shared.messages import CapabilityChange, ServerRecord, decode
from shared.valkey import Outbox
from tests.conftest import entries

pytestmark = pytest.mark.anyio


@pytest.fixture
async def publisher(valkey: Redis, valkey_url: str) -> AsyncIterator[Publisher]:
    out = Outbox(valkey_url)
    try:
        yield Publisher(valkey, out)
    finally:
        out.close()


def record(name: str, **kw: Any) -> ServerRecord:
    return ServerRecord(name=name, url=f"http://{name}/mcp", state="Connected", **kw)


async def _events(valkey: Redis) -> list[list[str]]:
    return [decode(fields, CapabilityChange).servers for _, fields in await entries(valkey, streams.CAPABILITIES)]


async def test_changed_records_are_stored_with_a_new_revision_and_announced_once(
    publisher: Publisher, valkey: Redis
) -> None:
    await publisher.publish({"a": record("a"), "b": record("b")})
    await publisher.publish({"a": record("a"), "b": record("b")})  # nothing changed: nothing announced
    await publisher.publish({"a": record("a", tools=[{"name": "t"}])})
    stored = await records.load(valkey)
    assert stored == {"a": record("a", tools=[{"name": "t"}], revision=2)}
    assert await _events(valkey) == [["a", "b"], ["a", "b"]]  # a changed, b removed
    groups = await valkey.xinfo_groups(streams.calls("a"))
    assert [g["name"] for g in groups] == [streams.GROUP_WORKERS.encode()]


async def test_records_valkey_lost_are_noticed(publisher: Publisher, valkey: Redis) -> None:
    assert await publisher.check()  # leading anew: loads what is there (nothing)
    await publisher.publish({"a": record("a")})
    assert await publisher.check()
    await valkey.flushall()
    assert not await publisher.check() and publisher.published == {}
