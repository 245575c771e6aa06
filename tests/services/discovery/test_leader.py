"""One discovery leads at a time, against a real valkey-server."""

from collections.abc import AsyncIterator

import anyio
import pytest
from redis.asyncio import Redis

from services.discovery.leader import Lease
from shared import streams
from shared.valkey import Outbox

pytestmark = pytest.mark.anyio


@pytest.fixture
async def outbox(valkey: Redis, valkey_url: str) -> AsyncIterator[Outbox]:
    out = Outbox(valkey_url)
    try:
        yield out
    finally:
        out.close()


async def test_one_holder_leads_until_it_lets_go(outbox: Outbox, valkey: Redis) -> None:
    first, second = Lease(outbox, "first", 10), Lease(outbox, "second", 10)
    assert await first.renew() and not await second.renew()
    await second.release()  # it holds nothing: lets go of nothing
    assert await valkey.get(streams.DISCOVERY_LEADER) == b"first"
    assert await first.renew()  # renewing its own lease
    await first.release()
    assert await second.renew() and not await first.renew()


async def test_a_lease_nobody_renews_runs_out(outbox: Outbox, valkey: Redis) -> None:
    assert await Lease(outbox, "gone", 0.05).renew()
    assert 0 < await valkey.pttl(streams.DISCOVERY_LEADER) <= 50
    successor = Lease(outbox, "next", 10)
    with anyio.fail_after(2):
        while not await successor.renew():
            await anyio.sleep(0.01)
