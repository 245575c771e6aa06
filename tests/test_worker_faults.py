"""A worker or an ingress replica dies with calls in flight: every call gets exactly one outcome, read-only calls
succeed, no destructive call runs twice, and calls whose caller is gone are not run at all."""

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from redis import Redis

from shared import streams
from tests.conftest import HEADERS, Muster, StandIn, initialize, make_muster, mcp_client

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

FAST = {
    "MUSTER_WORKER_HEARTBEAT_SECONDS": "0.25",
    "MUSTER_WORKER_DEAD_AFTER_SECONDS": "2",
    "MUSTER_WORKER_REPLICA_DEAD_AFTER_SECONDS": "3",
    "MUSTER_WORKER_RECLAIM_SECONDS": "0.5",
    "MUSTER_WORKER_SERVER_CONCURRENCY": "16",
}


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.standin("alpha", "--destructive")
        m.standin("queued")
        m.discovery()
        for _ in range(2):
            m.worker(**FAST)
        m.ingress(MUSTER_INGRESS_CALL_TIMEOUT="90")
        m.wait_tools(14)
        for child in m.workers:
            m.beating(child)
        yield m


def _request(n: int, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


def _delete(n: int) -> dict[str, Any]:
    return {"resourceType": "configmaps", "name": f"cm-{n}", "namespace": "default"}


async def _wait(condition: Any, seconds: float, what: str) -> None:
    with anyio.fail_after(seconds):
        while not await anyio.to_thread.run_sync(condition):
            await anyio.sleep(0.05)


def _settled(muster: Muster, *servers: str) -> bool:
    """Every call of these servers let go of: no depth, nothing pending, no payload left."""
    with Redis.from_url(muster.valkey_url) as valkey:
        for server in servers:
            queue = streams.queue(server)
            pending: Any = valkey.xpending(queue.stream, streams.GROUP_WORKERS)
            if int(valkey.get(queue.depth) or 0) or pending["pending"] or valkey.xlen(queue.stream):
                return False
    return True


async def test_a_worker_killed_with_200_calls_in_flight_costs_no_call_and_runs_no_destructive_call_twice(
    muster: Muster,
) -> None:
    alpha = muster.standins["alpha"]
    alpha.fault(action="delay", tool="cluster_health", seconds=1.5)  # every call, until cleared
    alpha.fault(action="delay", tool="delete", seconds=1.5)
    url = muster.url()
    session = initialize(url)
    victim = muster.workers[0]
    outcomes: dict[int, dict[str, Any]] = {}
    try:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=250)) as http:

            async def one(n: int) -> None:
                body = _request(n, "x_alpha_cluster_health", {}) if n % 2 else _request(n, "x_alpha_delete", _delete(n))
                response = await http.post(url, headers={**HEADERS, "Mcp-Session-Id": session}, json=body)
                assert response.status_code == 200, response.text
                outcomes[n] = response.json()

            async with anyio.create_task_group() as tg:
                for n in range(200):
                    tg.start_soon(one, n)
                await _wait(lambda: alpha.stats()["running"] >= 24, 30, "both workers busy")
                muster.stack.stop_child(victim, signal.SIGKILL)
                await anyio.sleep(0.5)
                muster.beating(muster.worker(victim.name, **FAST))  # restarted under the same id, as by muster up
    finally:
        alpha.clear_faults()
    assert sorted(outcomes) == list(range(200))  # exactly one outcome each: one HTTP response per request
    runs = alpha.stats()["runs"]
    for n, outcome in outcomes.items():
        assert outcome["id"] == n
        if n % 2:
            assert outcome["result"]["isError"] is False, outcome  # read-only: run again where needed
        else:
            assert "result" in outcome or outcome["error"]["code"] == -32005, outcome  # ran, or may have
            assert runs.get(f"delete {json.dumps(_delete(n), sort_keys=True)}", 0) <= 1
    unknown = [n for n, o in outcomes.items() if "error" in o]
    print(f"\n200 calls, worker killed: {len(unknown)} destructive calls answered -32005, the rest their result")
    await _wait(lambda: _settled(muster, "alpha"), 15, "every call let go of")


def _fill_lanes(muster: Muster, queued: StandIn, seconds: float) -> Any:
    """Both workers' lanes for `queued` held by slow calls: 16 running and a batch of 16 waiting for room in each
    (a worker reads up to MUSTER_WORKER_BATCH at once); what comes next waits in the queue."""
    queued.fault(action="delay", tool="cluster_health", seconds=seconds, count=64)
    session = initialize(muster.url())

    async def one(http: httpx.AsyncClient, n: int) -> None:
        body = _request(n, "x_queued_cluster_health", {})
        await http.post(muster.url(), headers={**HEADERS, "Mcp-Session-Id": session}, json=body)

    async def fill() -> None:
        async with httpx.AsyncClient(timeout=60) as http, anyio.create_task_group() as tg:
            for n in range(64):
                tg.start_soon(one, http, n)

    return fill


async def test_calls_whose_ingress_replica_died_are_not_run_and_its_replies_do_not_linger(muster: Muster) -> None:
    queued = muster.standins["queued"]
    victim_url = muster.ingress(MUSTER_INGRESS_CALL_TIMEOUT="90")
    victim = muster.stack.children[-1]
    assert victim.process is not None
    victim_replica = _replica_of(muster, victim.process.pid)
    session = initialize(victim_url)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_fill_lanes(muster, queued, seconds=12))  # the replica is judged gone long before
        await _wait(lambda: queued.stats()["running"] >= 32, 30, "lanes full")

        async def orphan(n: int) -> None:
            body = _request(n, "x_queued_get", {"resourceType": "namespaces", "name": f"orphan-{n}"})
            headers = {**HEADERS, "Mcp-Session-Id": session}
            with pytest.raises(httpx.HTTPError):  # the replica dies under it
                async with httpx.AsyncClient(timeout=60) as http:
                    await http.post(victim_url, headers=headers, json=body)

        for n in range(10):
            tg.start_soon(orphan, n)
        await _wait(lambda: _depth(muster, "queued") >= 74, 10, "the orphans queued")
        muster.stack.stop_child(victim, signal.SIGKILL)
    await _wait(lambda: _settled(muster, "queued"), 30, "every call let go of")
    runs = queued.stats()["runs"]
    assert not [key for key in runs if "orphan" in key]  # none of them ran
    with Redis.from_url(muster.valkey_url) as valkey:
        assert valkey.exists(streams.replies(victim_replica)) == 0


async def test_a_per_request_client_that_went_away_before_its_call_started_does_not_have_it_run(
    muster: Muster,
) -> None:
    queued = muster.standins["queued"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(_fill_lanes(muster, queued, seconds=3))
        await _wait(lambda: queued.stats()["running"] >= 32, 30, "lanes full")
        async with mcp_client(muster.url()) as client:  # the 2026-07-28 protocol: no session
            with anyio.move_on_after(1.0):
                await client.call_tool("x_queued_get", {"resourceType": "namespaces", "name": "abandoned"})
    await _wait(lambda: _settled(muster, "queued"), 30, "every call let go of")
    assert not [key for key in queued.stats()["runs"] if "abandoned" in key]


def _depth(muster: Muster, server: str) -> int:
    with Redis.from_url(muster.valkey_url) as valkey:
        return int(valkey.get(streams.depth(server)) or 0)


def _replica_of(muster: Muster, pid: int) -> str:
    """The replica id of the ingress process `pid` (host-pid-random), once it registered."""
    deadline = time.monotonic() + 10
    with Redis.from_url(muster.valkey_url) as valkey:
        while True:
            members: set[bytes] = valkey.smembers(streams.REPLICAS)
            found = [m.decode() for m in members if f"-{pid}-" in m.decode()]
            if found:
                return found[0]
            assert time.monotonic() < deadline, "the replica never registered"
            time.sleep(0.05)
