"""Discovery's loop in one process, on real parts: a valkey-server, the test API server, a stand-in upstream."""

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from kubernetes.aio import client
from redis.asyncio import Redis

from services.discovery.app import Discovery, NotReady
from services.discovery.config import DiscoverySettings
from services.discovery.folder import Folder
from services.discovery.leader import Lease
from services.discovery.lease_k8s import KubernetesLease
from services.discovery.source import FolderSource
from services.discovery.status_writer import StatusWriter
from services.discovery.watch import MCPServerWatch
from shared import records
from shared.messages import ServerRecord
from shared.valkey import Outbox
from tests.conftest import StandIn, make_muster, server_yaml
from tests.kube import FakeApi, mcpserver

pytestmark = [
    pytest.mark.anyio,
    # A lease renewal cut by its deadline can leave aiohttp's socket to the garbage collector, which then warns in
    # whatever test runs: aiohttp's, not ours (the lease test cuts renewals on purpose).
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in.*(socket\.socket|_SelectorTransport\.__del__)"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    for m in make_muster(tmp_path_factory.mktemp("standin")):
        yield m.standin("alpha", register=False)


@pytest.fixture
async def outbox(valkey: Redis, valkey_url: str) -> AsyncIterator[Outbox]:
    out = Outbox(valkey_url)
    try:
        yield out
    finally:
        out.close()


def settings(valkey_url: str, **kw: Any) -> DiscoverySettings:
    return DiscoverySettings(valkey_url=valkey_url, poll_seconds=0.05, refresh_seconds=30, **kw)


@asynccontextmanager
async def running(discovery: Discovery) -> AsyncIterator[Discovery]:
    task = asyncio.create_task(discovery.run())
    try:
        yield discovery
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=10)
        if not done:  # what keeps it from stopping, instead of a test that hangs until pytest-timeout
            for other in asyncio.all_tasks():
                other.print_stack(file=sys.stderr)
            pytest.fail("discovery did not stop within 10 s of being cancelled (task stacks on stderr)")


async def ready(discovery: Discovery) -> dict[str, str]:
    verdicts = {}
    for name, check in discovery.readiness():
        try:
            await check()
            verdicts[name] = "ok"
        except NotReady as exc:
            verdicts[name] = str(exc)
    return verdicts


async def until(predicate: Callable[[], Any], within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not await predicate():
            await asyncio.sleep(0.05)


def stored(valkey: Redis) -> Callable[[], Any]:
    async def load() -> dict[str, ServerRecord]:
        return {k: v for k, v in (await records.load(valkey)).items() if v is not None}

    return load


async def test_the_folder_source_serves_through_the_same_loop_and_a_broken_file_stops_nothing(
    valkey: Redis, valkey_url: str, outbox: Outbox, standin: StandIn, tmp_path: Path
) -> None:
    (tmp_path / "alpha.yaml").write_text(server_yaml("alpha", standin.url))
    s = settings(valkey_url, servers=tmp_path)
    discovery = Discovery(s, valkey, outbox, FolderSource(Folder(tmp_path), 0.05), Lease(outbox, "me", 10))
    assert set((await ready(discovery)).values()) != {"ok"}
    async with running(discovery):
        await until(lambda: _has(stored(valkey), {"alpha"}))
        assert await ready(discovery) == {"synced": "ok", "leader": "ok"}
        (tmp_path / "broken.yaml").write_text("kind: MCPServer\nspec: [\n")
        (tmp_path / "beta.yaml").write_text(server_yaml("beta", standin.url))
        await until(lambda: _has(stored(valkey), {"alpha", "beta"}))
        assert discovery.desired is not None and "broken.yaml" in discovery.desired.errors
        assert (await stored(valkey)())["alpha"].state == "Connected"


async def _has(load: Callable[[], Any], names: set[str]) -> bool:
    found = await load()
    return set(found) == names and all(r.state == "Connected" for r in found.values())


async def test_nothing_is_published_before_the_first_complete_list_and_then_exactly_what_it_says(
    valkey: Redis, valkey_url: str, outbox: Outbox, standin: StandIn, api: FakeApi, kube: client.ApiClient
) -> None:
    old = {n: ServerRecord(name=n, url=standin.url, state="Connected", tools=[{"name": "t"}]) for n in ("a", "b")}
    await records.store(valkey, old.values())
    api.create(mcpserver("a", standin.url))
    api.faults(rules=[{"verb": "list", "match": "/mcpservers", "status": 500}])
    lease = KubernetesLease(
        kube, "muster", "muster-discovery", "me", lease_duration=2, renew_deadline=1.2, retry_period=0.3
    )
    source = MCPServerWatch(kube, "muster", backoff_max_seconds=0.2)
    discovery = Discovery(
        settings(valkey_url, source="kubernetes"),
        valkey,
        outbox,
        source,
        lease,
        StatusWriter(kube, lambda: lease.is_leader),
    )
    async with running(discovery):
        await until(lambda: _true(lease.is_leader))
        await asyncio.sleep(1.0)  # leading, and the list keeps failing
        assert await ready(discovery) == {
            "synced": "the kubernetes source has not delivered a complete list yet",
            "leader": "ok",
        }
        assert await stored(valkey)() == old, "a leader that has not seen the whole list removes nothing"
        assert api.count("update", "/status") == 0
        api.clear_faults()
        await until(lambda: _has(stored(valkey), {"a"}))
        assert (await ready(discovery))["synced"] == "ok"


async def _true(value: bool) -> bool:
    return value


async def test_a_leader_whose_lease_lapses_stops_publishing_and_writing_status_until_it_leads_again(
    valkey: Redis, valkey_url: str, outbox: Outbox, standin: StandIn, api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("a", standin.url))
    lease = KubernetesLease(
        kube, "muster", "muster-discovery", "me", lease_duration=2, renew_deadline=1.2, retry_period=0.3
    )
    source = MCPServerWatch(kube, "muster", backoff_max_seconds=0.2)
    writer = StatusWriter(kube, lambda: lease.is_leader, min_interval=0)
    discovery = Discovery(settings(valkey_url, source="kubernetes"), valkey, outbox, source, lease, writer)
    async with running(discovery):
        await until(lambda: _has(stored(valkey), {"a"}))
        await until(lambda: _true((api.get("a").get("status") or {}).get("state") == "Connected"))

        api.faults(rules=[{"verb": "update", "match": "/leases/", "delay": 3.0}])  # every renewal hangs
        await until(lambda: _true(not lease.is_leader), within=3)
        api.reset_counts()
        api.create(mcpserver("b", standin.url))
        api.patch_spec("a", {"timeout": 7})
        await until(lambda: _true(discovery.desired is not None and "b" in discovery.desired.servers))
        await asyncio.sleep(1.0)
        assert set(await stored(valkey)()) == {"a"}, "no record written without the lease"
        assert api.count("update", "/mcpservers/") == 0, "no status written without the lease"
        assert not discovery.leading

        api.clear_faults()
        await until(lambda: _has(stored(valkey), {"a", "b"}), within=10)
        await until(lambda: _true((api.get("a").get("status") or {}).get("observedGeneration") == 2))
        await until(lambda: _true((api.get("b").get("status") or {}).get("state") == "Connected"))
