"""The end of an agent session ends its upstream sessions, once each: on its DELETE, heard by every worker, and
on its expiry, found by the janitor. The stand-in of mcp-kubernetes counts the DELETEs it gets."""

import asyncio
import time
from typing import Any

import anyio
import pytest

from services.worker.janitor import Janitor
from services.worker.upstream import Upstream
from shared import streams
from shared.messages import ReplyKind
from tests.conftest import StandIn
from tests.services.worker.conftest import NS, Bench

pytestmark = pytest.mark.anyio


def _janitor(bench: Bench, upstream: Upstream) -> Janitor:
    d = bench.dispatcher
    return Janitor(bench.outbox, d.bindings, d.agents, lambda: {upstream.name: upstream}, interval=60)


async def _bind(bench: Bench, upstream: Upstream, agent: bytes) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    kind, _ = await bench.dispatcher.executor.execute(upstream, bench.call("k8s", "get", NS, session=agent), deadline)
    assert kind is ReplyKind.RESULT


def _deleted(k8s: StandIn) -> int:
    count: int = k8s.stats()["requests"].get("DELETE 200", 0)
    return count


async def test_the_agents_delete_ends_its_upstream_session_once_though_every_worker_hears_it(
    bench: Bench, other: Bench, k8s: StandIn
) -> None:
    agent = await bench.agent("agent-1")
    here, there = bench.upstream(k8s), other.upstream(k8s)
    await _bind(bench, here, agent)
    await _bind(other, there, agent)
    before = _deleted(k8s)
    janitors = _janitor(bench, here), _janitor(other, there)
    await asyncio.gather(*(j.session_ended(agent) for j in janitors))
    assert _deleted(k8s) == before + 1
    assert sum(j.closed for j in janitors) == 1
    assert not here.bound and not there.bound  # forgotten by both workers
    assert not await bench.valkey.exists(streams.upstream_sessions("agent-1"))


async def test_an_expired_agent_sessions_upstream_session_is_closed_and_a_live_ones_kept(
    bench: Bench, k8s: StandIn
) -> None:
    brief, lasting = await bench.agent("brief", ttl=1), await bench.agent("lasting", ttl=600)
    upstream = bench.upstream(k8s)
    await _bind(bench, upstream, brief)
    await _bind(bench, upstream, lasting)
    indexed: Any = await bench.valkey.zrange(streams.UPSTREAM_EXPIRY, 0, -1)
    assert sorted(indexed) == [b"brief", b"lasting"]
    with anyio.fail_after(5):  # Valkey expires the brief session by itself
        while await bench.valkey.exists(streams.session("brief")):
            await anyio.sleep(0.05)
    before = _deleted(k8s)
    janitor = _janitor(bench, upstream)
    now = time.time() + 3600  # both are due
    await janitor.sweep(now)
    assert _deleted(k8s) == before + 1 and janitor.closed == 1
    assert not await bench.valkey.exists(streams.upstream_sessions("brief"))
    assert brief not in upstream.bound and lasting in upstream.bound
    score = await bench.valkey.zscore(streams.UPSTREAM_EXPIRY, "lasting")  # looked at again when it would expire
    assert score is not None and now + 590 < score <= now + 600
    ttl = await bench.valkey.ttl(streams.upstream_sessions("lasting"))
    assert 590 + streams.BINDING_GRACE < ttl <= 600 + streams.BINDING_GRACE
    assert await bench.valkey.zrange(streams.UPSTREAM_EXPIRY, 0, -1) == [b"lasting"]
    await janitor.sweep(now)  # nothing is due any more
    assert _deleted(k8s) == before + 1
