"""The Kubernetes source against the test API server, with the official asyncio client."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from kubernetes.aio import client

from services.discovery.source import Desired, Update
from services.discovery.watch import MCPServerWatch
from tests.kube import FakeApi, mcpserver

pytestmark = pytest.mark.anyio

CHANGE_BOUND = 2.0  # seconds: a change reaches every session within 2 s, so the source must be faster still


class Recorder:
    def __init__(self, source: MCPServerWatch) -> None:
        self.source = source
        self.updates: list[Update] = []
        self.changed = asyncio.Event()

    async def run(self) -> None:
        async for update in self.source.updates():
            self.updates.append(update)
            self.changed.set()

    @property
    def desired(self) -> Desired:
        return self.updates[-1].desired

    @property
    def changes(self) -> list[tuple[str, str]]:
        return [(c.kind, c.name) for u in self.updates for c in u.changes]

    async def until(self, predicate: Callable[[], bool], within: float = CHANGE_BOUND) -> None:
        with anyio.fail_after(within):
            while not (self.updates and predicate()):
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def recording(kube: client.ApiClient, namespace: str | None = "muster") -> AsyncIterator[Recorder]:
    recorder = Recorder(MCPServerWatch(kube, namespace, backoff_max_seconds=0.5))
    task = asyncio.create_task(recorder.run())
    try:
        yield recorder
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def names(recorder: Recorder) -> set[str]:
    return set(recorder.desired.servers)


async def test_the_desired_set_follows_creates_changes_and_deletes_within_two_seconds(
    api: FakeApi, kube: client.ApiClient
) -> None:
    async with recording(kube) as r:
        await r.until(lambda: r.source.synced.is_set())
        assert r.updates[0].desired == Desired() and r.updates[0].changes == ()
        api.create(mcpserver("a"))
        await r.until(lambda: names(r) == {"a"})
        api.patch_spec("a", {"toolPrefix": "alpha"})
        await r.until(lambda: r.desired.servers["a"].spec.tool_prefix == "alpha")
        assert r.desired.servers["a"].metadata.generation == 2
        api.delete("a")
        await r.until(lambda: names(r) == set())
    assert r.changes == [("added", "a"), ("modified", "a"), ("removed", "a")]


async def test_a_status_write_is_not_a_change_of_the_server(api: FakeApi, kube: client.ApiClient) -> None:
    api.create(mcpserver("a"))
    async with recording(kube) as r:
        await r.until(lambda: names(r) == {"a"})
        current = api.get("a")
        api.replace({**current, "metadata": {**current["metadata"], "labels": {"x": "y"}}})
        status = {**api.get("a"), "status": {"state": "Connected"}}
        api._call("PUT", "/apis/muster.giantswarm.io/v1alpha1/namespaces/muster/mcpservers/a/status", status)
        api.create(mcpserver("b"))  # a change after them: once it is seen, the status write has been seen too
        await r.until(lambda: names(r) == {"a", "b"})
    assert r.changes == [("added", "a"), ("added", "b")]


async def test_a_watch_cut_mid_event_then_gone_on_resume_misses_nothing_and_repeats_nothing(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("stays"))
    api.create(mcpserver("goes"))
    async with recording(kube) as r:
        await r.until(lambda: names(r) == {"stays", "goes"})
        await api.wait_watches(1)
        api.create(mcpserver("early"))
        await r.until(lambda: "early" in names(r))

        # The next watch is answered 410, so the source must list again; meanwhile things change.
        api.faults(watch_gone=1, bookmark_seconds=0.2)
        api.faults(cut_watches=True, partial=True)
        api.patch_spec("stays", {"timeout": 5})
        api.delete("goes")
        api.create(mcpserver("late"))
        await r.until(lambda: names(r) == {"stays", "early", "late"})
        assert r.desired.servers["stays"].spec.timeout == 5
        assert api.count("list") == 2, "the 410 made the source list again"

        # A plain cut resumes the watch from the newest version seen, with no list and no gap.
        api.faults(cut_watches=True, partial=False)
        api.delete("early")
        await r.until(lambda: "early" not in names(r))
        assert api.count("list") == 2

    assert r.changes == [
        ("added", "goes"),
        ("added", "stays"),
        ("added", "early"),
        ("removed", "goes"),
        ("added", "late"),
        ("modified", "stays"),
        ("removed", "early"),
    ]


async def test_a_watch_answered_http_410_or_cut_by_5xx_recovers_alike(api: FakeApi, kube: client.ApiClient) -> None:
    async with recording(kube) as r:
        await r.until(lambda: r.source.synced.is_set())
        await api.wait_watches(1)
        api.faults(watch_gone_http=1, rules=[{"verb": "watch", "status": 503, "count": 2}])
        api.faults(cut_watches=True)
        api.create(mcpserver("a"))
        await r.until(lambda: names(r) == {"a"}, within=5)
    assert r.changes == [("added", "a")]


async def test_a_restart_reports_the_existing_servers_at_once_and_never_a_removal(
    api: FakeApi, kube: client.ApiClient
) -> None:
    for name in ("a", "b", "c"):
        api.create(mcpserver(name))
    async with recording(kube) as first:
        await first.until(lambda: names(first) == {"a", "b", "c"})
    # The restarted source's first list fails twice and is slow: it must report nothing until it has it all.
    api.faults(rules=[{"verb": "list", "status": 500, "count": 2}, {"verb": "list", "delay": 0.5, "count": 1}])
    async with recording(kube) as second:
        await second.until(lambda: second.source.synced.is_set(), within=5)
        assert len(second.updates) == 1
    assert api.count("list") == 4
    assert names(second) == {"a", "b", "c"}
    assert second.changes == [("added", "a"), ("added", "b"), ("added", "c")]


async def test_an_invalid_resource_is_refused_by_name_and_field_and_the_rest_is_served(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("good"))
    api.create(mcpserver("bad", url="ftp://nowhere"))
    async with recording(kube) as r:
        await r.until(lambda: "good" in names(r))
        assert names(r) == {"good"}
        assert "muster/bad" in r.desired.errors
        error = r.desired.errors["muster/bad"]
        assert "MCPServer bad" in error and "spec.url" in error
        api.patch_spec("bad", {"url": "http://127.0.0.1:9/mcp"})
        await r.until(lambda: "bad" in names(r))
        assert r.desired.errors == {}
    assert r.changes == [("added", "good"), ("refused", "muster/bad"), ("added", "bad")]


async def test_all_namespaces_are_watched_and_a_name_taken_twice_is_refused_once(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("a"), namespace="team-1")
    async with recording(kube, namespace=None) as every, recording(kube, namespace="team-2") as one:
        await every.until(lambda: names(every) == {"a"})
        api.create(mcpserver("b"), namespace="team-2")
        api.create(mcpserver("a"), namespace="team-2")
        await every.until(lambda: names(every) == {"a", "b"} and len(every.desired.errors) == 1)
        await one.until(lambda: names(one) == {"a", "b"})
        assert every.desired.servers["a"].metadata.namespace == "team-1"
        assert "team-2/a" in every.desired.errors and "team-1" in every.desired.errors["team-2/a"]
        assert one.desired.servers["a"].metadata.namespace == "team-2"
