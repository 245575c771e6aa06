"""One agent floods a server with 5,000 calls at once while another makes 20 sequential calls to it: the quiet
agent's calls wait behind the flood's fair share, not behind the flood. The test asserts the order (the quiet
agent is done long before the flood); `make bench` reports its p99 against its idle p99."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bench.fairness import measure
from services.ingress.config import IngressSettings
from shared import streams
from tests.conftest import Muster, make_muster

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.standin("busy")
        m.discovery()
        for _ in range(2):
            m.worker(MUSTER_WORKER_SERVER_CONCURRENCY="16", MUSTER_WORKER_BATCH="16")
        default = IngressSettings.model_fields["fair_share"].default
        m.ingress(MUSTER_INGRESS_FAIR_SHARE=str(default), MUSTER_LOG_LEVEL="WARNING")
        m.wait_tools(6)
        for child in m.workers:
            m.beating(child)
        yield m


async def test_a_quiet_agent_is_served_long_before_another_agent_s_flood_of_5000_calls(muster: Muster) -> None:
    valkey = Redis.from_url(muster.valkey_url)

    async def depth() -> int:
        return int(await valkey.get(streams.depth("busy")) or 0)

    try:
        result = await measure(
            muster.url(), "x_busy_get", {"resourceType": "namespaces", "name": "default"}, flood=5000, depth=depth
        )
    finally:
        await valkey.aclose()
    print(f"\nfairness: {result}")
    assert result["flood_failed"] == 0, result["flood_failures"]
    # The quiet agent's 20 calls were done while the flood had more than half its time to go.
    assert result["quiet_done_after"] < result["flood_elapsed"] / 2, result
