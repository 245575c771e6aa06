"""Faults at every seam: a forgotten session, a dropped connection, a killed worker, a full queue, a dead upstream,
a deadline. Each caller gets exactly one clear outcome."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from shared import streams
from shared.valkey import connect
from tests.conftest import HEADERS, Muster, initialize, make_muster

pytestmark = pytest.mark.slow

FAST_RECLAIM = {
    "MUSTER_WORKER_DEAD_AFTER_SECONDS": "1",
    "MUSTER_WORKER_RECLAIM_SECONDS": "0.3",
    "MUSTER_WORKER_HEARTBEAT_SECONDS": "0.3",
}


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.standin("alpha", "--destructive")
        m.discovery()
        m.ingress(MUSTER_INGRESS_QUEUE_LIMIT="3", MUSTER_INGRESS_CALL_TIMEOUT="6")
        m.ingress(MUSTER_INGRESS_CALL_TIMEOUT="60")  # for calls that outlive a worker's restart on a busy machine
        yield m


def stop_workers(muster: Muster) -> None:
    for child in muster.workers:
        if child in muster.stack.children:
            muster.stack.stop_child(child)


@pytest.fixture
def worker(muster: Muster) -> Iterator[Any]:
    """Exactly one worker, and none left over afterwards."""
    stop_workers(muster)
    yield muster.beating(muster.worker(**FAST_RECLAIM))
    stop_workers(muster)


def call(
    muster: Muster, session: str, tool: str, arguments: dict[str, Any], timeout: float = 30, n: int = 0
) -> dict[str, Any]:
    response = httpx.post(
        muster.url(n),
        headers={**HEADERS, "Mcp-Session-Id": session},
        timeout=timeout,
        json={"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": arguments}},
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def wait_started(muster: Muster, tool: str, before: int) -> None:
    deadline = time.monotonic() + 30
    while muster.standins["alpha"].stats()["started"].get(tool, 0) <= before:
        assert time.monotonic() < deadline, "the call never started at the upstream"
        time.sleep(0.02)


NS = {"resourceType": "namespaces", "name": "default"}


def test_a_session_the_upstream_forgot_is_reopened_without_failing_the_call(muster: Muster, worker: Any) -> None:
    alpha = muster.standins["alpha"]
    session = initialize(muster.url())
    assert "result" in call(muster, session, "x_alpha_get", NS)
    opened = sessions_not_listing(alpha)
    alpha.fault(action="session_reject", method="tools/call", count=1)
    result = call(muster, session, "x_alpha_get", NS)
    assert result["result"]["isError"] is False
    deadline = time.monotonic() + 2  # past a listing that has opened its session and not yet listed
    while sessions_not_listing(alpha) != opened + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions_not_listing(alpha) == opened + 1, "the worker opened exactly one session again"


def sessions_not_listing(standin: Any) -> int:
    """Sessions opened at the stand-in, less discovery's: each of its listings opens a session (its refresh runs
    every 5 s here) and lists the tools there, which the worker never does."""
    stats = standin.stats()
    return int(stats["sessions"]) - int(stats["methods"].get("tools/list", 0))


def test_a_dropped_connection_is_retried_for_a_read_only_tool(muster: Muster, worker: Any) -> None:
    alpha = muster.standins["alpha"]
    alpha.fault(action="drop_connection", tool="get", count=1)
    result = call(muster, initialize(muster.url()), "x_alpha_get", NS)
    assert result["result"]["isError"] is False
    assert alpha.stats()["requests"]["POST fault drop_connection"] >= 1


def test_a_dropped_connection_during_a_destructive_tool_is_outcome_unknown(muster: Muster, worker: Any) -> None:
    muster.standins["alpha"].fault(action="drop_connection", tool="delete", count=1)
    result = call(
        muster,
        initialize(muster.url()),
        "x_alpha_delete",
        {"resourceType": "configmaps", "name": "web-config", "namespace": "org-acme"},
    )
    assert result["error"]["code"] == -32005


def call_and_kill_its_worker(muster: Muster, worker: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Calls a tool, starts a second worker, SIGKILLs the first while the upstream runs the call; returns the
    outcome."""
    session = initialize(muster.url(1))
    outcome: list[dict[str, Any]] = []
    upstream_tool = tool.removeprefix("x_alpha_")
    before = muster.standins["alpha"].stats()["started"].get(upstream_tool, 0)

    async def caller() -> None:
        outcome.append(await anyio.to_thread.run_sync(call, muster, session, tool, arguments, 60, 1))

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await anyio.to_thread.run_sync(wait_started, muster, upstream_tool, before)
            # the survivor, running before the first one dies, as another replica would be
            await anyio.to_thread.run_sync(muster.beating, muster.worker(**FAST_RECLAIM))
            muster.stack.stop_child(worker, signal.SIGKILL)

    anyio.run(scenario)
    return outcome[0]


def test_a_killed_worker_s_read_only_call_is_run_again_by_another(muster: Muster, worker: Any) -> None:
    alpha = muster.standins["alpha"]
    alpha.fault(action="delay", tool="cluster_health", seconds=30, count=1)
    before = alpha.stats()["started"].get("cluster_health", 0)
    outcome = call_and_kill_its_worker(muster, worker, "x_alpha_cluster_health", {})
    assert outcome["result"]["isError"] is False
    assert alpha.stats()["started"]["cluster_health"] == before + 2  # ran twice: it is read-only


def test_a_killed_worker_s_destructive_call_is_not_run_twice(muster: Muster, worker: Any) -> None:
    alpha = muster.standins["alpha"]
    alpha.fault(action="delay", tool="delete", seconds=30, count=1)
    before = alpha.stats()["started"].get("delete", 0)
    args = {"resourceType": "configmaps", "name": "nginx-config", "namespace": "default"}
    outcome = call_and_kill_its_worker(muster, worker, "x_alpha_delete", args)
    assert outcome["error"]["code"] == -32005, outcome
    assert "not safe to run twice" in outcome["error"]["message"]
    assert alpha.stats()["started"]["delete"] == before + 1


def test_a_full_queue_answers_at_once_with_a_retry_hint(muster: Muster) -> None:
    # no worker runs: accepted calls stay queued, and the fourth finds the queue (limit 3) full
    stop_workers(muster)
    session = initialize(muster.url())
    results: list[dict[str, Any]] = []

    def one() -> None:
        results.append(call(muster, session, "x_alpha_get", NS))

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(anyio.to_thread.run_sync, one)
            valkey = connect(muster.valkey_url)
            with anyio.fail_after(10):  # the three are queued: the server's depth counts them
                while await valkey.get(streams.depth("alpha")) != b"3":
                    await anyio.sleep(0.02)
            await valkey.aclose()
            started = time.monotonic()
            full = await anyio.to_thread.run_sync(call, muster, session, "x_alpha_get", NS)
            assert time.monotonic() - started < 0.5
            assert full["error"]["code"] == -32003 and full["error"]["data"] == {"retryAfter": 1.0}
            muster.worker(**FAST_RECLAIM)  # the queued calls now run

    anyio.run(scenario)
    assert [r["result"]["isError"] for r in results] == [False, False, False]


def test_a_call_past_its_deadline_is_answered_as_such(muster: Muster, worker: Any) -> None:
    muster.standins["alpha"].fault(action="delay", tool="describe", seconds=10, count=1)
    started = time.monotonic()
    result = call(muster, initialize(muster.url()), "x_alpha_describe", NS)
    assert result["error"]["code"] == -32001
    assert 5.5 < time.monotonic() - started < 9


def test_an_upstream_that_went_away_is_unavailable_with_a_retry_hint(muster: Muster, worker: Any) -> None:
    beta = muster.standin("beta")
    muster.wait_tools(14)  # alpha (destructive): 8, beta: 6
    session = initialize(muster.url())
    assert "result" in call(muster, session, "x_beta_get", NS)
    muster.stack.stop_child(next(c for c in muster.stack.children if c.name == "standin beta"))
    started = time.monotonic()
    result = call(muster, session, "x_beta_get", NS)
    assert time.monotonic() - started < 2
    assert result["error"]["code"] == -32004
    assert result["error"]["data"] == {"retryAfter": 5.0}
    assert f"127.0.0.1:{beta.port}" in result["error"]["message"]
