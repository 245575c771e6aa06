"""Valkey killed, restarted (with its data or without it) or frozen under load: clear errors while it is down, no
accepted call lost where its data survives, no live worker taking over another's running call, and everything
back without a restart of any muster process."""

import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from redis import Redis
from redis.exceptions import ResponseError

from shared import streams
from tests.conftest import HEADERS, Muster, make_muster

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

WORKER = {
    "MUSTER_WORKER_HEARTBEAT_SECONDS": "0.5",
    "MUSTER_WORKER_DEAD_AFTER_SECONDS": "2",
    "MUSTER_WORKER_RECLAIM_SECONDS": "0.5",
}
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "load", "version": "1"}},
}
UNAVAILABLE = -32006


@contextmanager
def stack(root: Path, appendfsync: str, **worker: str) -> Iterator[Muster]:
    with contextmanager(make_muster)(root, appendfsync) as m:
        m.standin("alpha")
        m.discovery()
        for _ in range(2):
            m.worker(**worker)
        m.ingress(MUSTER_INGRESS_CALL_TIMEOUT="20")
        m.wait_tools(6)
        for child in m.workers:
            m.beating(child)
        yield m


def valkey_child(muster: Muster) -> Any:
    return next(c for c in muster.stack.children if c.name == "valkey")


def restart_valkey(muster: Muster, appendfsync: str) -> None:
    port = int(muster.valkey_url.rsplit(":", 1)[1].split("/")[0])
    muster.stack.valkey(port, appendfsync=appendfsync)
    muster.stack.children.insert(0, muster.stack.children.pop())  # stopped last again, after the services


def settled(muster: Muster, server: str) -> bool:
    with Redis.from_url(muster.valkey_url) as valkey:
        queue = streams.queue(server)
        try:
            pending: Any = valkey.xpending(queue.stream, streams.GROUP_WORKERS)
        except ResponseError:  # no group yet, after Valkey lost it: nothing pending either
            pending = {"pending": 0}
        return not int(valkey.get(queue.depth) or 0) and not pending["pending"] and not valkey.xlen(queue.stream)


async def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    with anyio.fail_after(seconds):
        while not await anyio.to_thread.run_sync(condition):
            await anyio.sleep(0.1)


@dataclass
class Load:
    """Agents calling a tool in a loop; each call's outcome, as its caller saw it, in the order they ended."""

    url: str
    agents: int
    outcomes: list[tuple[float, str]] = field(default_factory=list)  # (when it ended, what it was)
    stop: bool = False
    # Agents that open their session at once but make their first call only once released (when a fault began):
    # the others may all be waiting for calls in flight then, and say nothing of how new calls fare.
    late: int = 0
    released: anyio.Event = field(default_factory=anyio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=60) as http, anyio.create_task_group() as tg:
            for n in range(self.agents + self.late):
                tg.start_soon(self._agent, http, n)

    async def _agent(self, http: httpx.AsyncClient, n: int) -> None:
        session: str | None = None
        calls = 0
        while not self.stop:
            try:
                if session is None:
                    response = await http.post(self.url, headers=HEADERS, json=INIT)
                    if response.status_code != 200:
                        self.outcomes.append((time.monotonic(), _kind(response)))
                        await anyio.sleep(0.2)
                        continue
                    session = response.headers["mcp-session-id"]
                if n >= self.agents:
                    await self.released.wait()
                calls += 1
                body = {
                    "jsonrpc": "2.0",
                    "id": calls,
                    "method": "tools/call",
                    "params": {"name": "x_alpha_get", "arguments": {"resourceType": "namespaces", "name": "default"}},
                }
                response = await http.post(self.url, headers={**HEADERS, "Mcp-Session-Id": session}, json=body)
            except httpx.HTTPError as exc:
                self.outcomes.append((time.monotonic(), f"http error {exc!r}"))
                continue
            kind = _kind(response)
            if kind == "session not found":
                session = None  # Valkey lost it: a client initializes again
            self.outcomes.append((time.monotonic(), kind))
            await anyio.sleep(0.05)

    def kinds(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(kind for at, kind in self.outcomes if since <= at < until)


def _kind(response: httpx.Response) -> str:
    if response.status_code == 404:
        return "session not found"
    try:
        message = response.json()
    except ValueError:
        return f"HTTP {response.status_code} without JSON-RPC"
    if "result" in message:
        return "result" if not message["result"].get("isError") else "tool error"
    if "error" in message:
        return str(message["error"]["code"])
    return f"HTTP {response.status_code}"


async def killed_and_restarted(muster: Muster, keep_data: bool, appendfsync: str) -> Load:
    """Load through muster while Valkey is SIGKILLed, down 2 s, and started again; returns the load."""
    muster.standins["alpha"].fault(action="delay", tool="get", seconds=0.3)  # calls are in flight at the kill
    load = Load(muster.url(), agents=8, late=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(load.run)
        await anyio.sleep(3)
        muster.stack.stop_child(valkey_child(muster), signal.SIGKILL)
        load.outcomes.append((time.monotonic(), "-- valkey killed"))
        load.released.set()  # one agent's first call is made while Valkey is down
        await anyio.sleep(2)
        if not keep_data:
            shutil.rmtree(muster.root / "valkey")
        restart_valkey(muster, appendfsync)
        load.outcomes.append((time.monotonic(), "-- valkey back"))
        back = time.monotonic()
        with anyio.fail_after(30):
            while load.kinds(since=back + 5)["result"] < 20:  # well after: muster serves again by itself
                await anyio.sleep(0.2)
        load.stop = True
    muster.stack.check()  # no muster process exited
    muster.standins["alpha"].clear_faults()
    print("\n" + ", ".join(f"{kind}: {n}" for kind, n in load.kinds().items()))
    return load


async def test_valkey_killed_and_restarted_with_its_data_loses_no_accepted_call(tmp_path: Path) -> None:
    with stack(tmp_path, "always", **WORKER) as muster:
        load = await killed_and_restarted(muster, keep_data=True, appendfsync="always")
        kinds = load.kinds()
        # An accepted call ends with its result; a call Valkey could not take was refused with -32006, at once.
        assert set(kinds) <= {"result", str(UNAVAILABLE), "-- valkey killed", "-- valkey back"}, kinds
        assert kinds[str(UNAVAILABLE)] > 0
        await wait_for(lambda: settled(muster, "alpha"), 20)


async def test_valkey_killed_with_appendfsync_everysec_loses_no_accepted_call_either(tmp_path: Path) -> None:
    # What `muster up` runs: Valkey writes its file before it answers and fsyncs it every second, so a killed
    # process loses nothing; only a crash of the host could lose the last second (the README says so).
    with stack(tmp_path, "everysec", **WORKER) as muster:
        load = await killed_and_restarted(muster, keep_data=True, appendfsync="everysec")
        kinds = load.kinds()
        assert set(kinds) <= {"result", str(UNAVAILABLE), "-- valkey killed", "-- valkey back"}, kinds
        await wait_for(lambda: settled(muster, "alpha"), 20)


async def test_valkey_restarted_without_its_data_is_recreated_by_every_reader(tmp_path: Path) -> None:
    with stack(tmp_path, "everysec", **WORKER) as muster:
        load = await killed_and_restarted(muster, keep_data=False, appendfsync="everysec")
        kinds = load.kinds()
        # What Valkey forgot: sessions (clients initialize again), and the calls still queued in it, whose
        # callers learn it at their deadline. Never a bare HTTP error.
        expected = {"result", str(UNAVAILABLE), "session not found", "-32001", "-- valkey killed", "-- valkey back"}
        assert set(kinds) <= expected, kinds
        await wait_for(lambda: settled(muster, "alpha"), 20)


async def test_a_frozen_valkey_fails_new_calls_fast_and_no_live_worker_takes_over_a_running_call(
    tmp_path: Path,
) -> None:
    # The workers' defaults: a worker is dead after 5 s without its heartbeat advancing; the freeze lasts 7 s.
    with stack(tmp_path, "everysec") as muster:
        alpha = muster.standins["alpha"]
        alpha.fault(action="delay", tool="get", seconds=4, count=20)
        valkey = valkey_child(muster)
        outcomes: dict[int, str] = {}
        async with httpx.AsyncClient(timeout=60) as http:
            session = (await http.post(muster.url(), headers=HEADERS, json=INIT)).headers["mcp-session-id"]

            async def get(n: int, name: str) -> httpx.Response:
                arguments = {"resourceType": "namespaces", "name": name}
                body = {
                    "jsonrpc": "2.0",
                    "id": n,
                    "method": "tools/call",
                    "params": {"name": "x_alpha_get", "arguments": arguments},
                }
                return await http.post(muster.url(), headers={**HEADERS, "Mcp-Session-Id": session}, json=body)

            async def one(n: int) -> None:
                outcomes[n] = _kind(await get(n, f"frost-{n}"))

            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(one, n)
                await wait_for(lambda: alpha.stats()["running"] >= 20, 20)
                os.kill(valkey.process.pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    frozen = await get(99, "default")
                    took = time.monotonic() - started
                    await anyio.sleep(7 - took)
                finally:
                    os.kill(valkey.process.pid, signal.SIGCONT)
        print(f"\na call against a frozen valkey was answered {_kind(frozen)} after {took * 1000:.0f} ms")
        assert _kind(frozen) == str(UNAVAILABLE) and took < 2.5
        assert frozen.json()["error"]["data"] == {"retryAfter": 1}
        assert outcomes == {n: "tool error" for n in range(20)}  # each its own result: no such namespace
        runs = alpha.stats()["runs"]
        assert [runs[f'get {{"name": "frost-{n}", "resourceType": "namespaces"}}'] for n in range(20)] == [1] * 20
        await wait_for(lambda: settled(muster, "alpha"), 20)
        with Redis.from_url(muster.valkey_url) as client:
            assert client.get(streams.depth("alpha")) == b"0"
