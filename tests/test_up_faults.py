"""`muster up` as a small init system, on ports of the test's choosing: a killed worker is started again while
the stack keeps serving and every call in flight gets exactly one outcome; a malformed MCPServer file stops
nothing; a child that keeps crashing stops the stack with a message that names it; a second Ctrl-C stops at once."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest

from muster.stack import Stack, free_port
from tests.conftest import HEADERS, ONE_AGENT_SHARE, ROOT, StandIn, initialize, server_yaml, tool_names

pytestmark = pytest.mark.slow

FAST_RECLAIM = {
    "MUSTER_WORKER_DEAD_AFTER_SECONDS": "2",
    "MUSTER_WORKER_RECLAIM_SECONDS": "0.5",
    "MUSTER_WORKER_HEARTBEAT_SECONDS": "0.5",
    "MUSTER_INGRESS_FAIR_SHARE": str(ONE_AGENT_SHARE),  # 200 calls of one session run at once
}


@dataclass
class Up:
    """One `muster up` process on free ports; what it and its children write to stderr goes to `log`."""

    root: Path
    servers: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "muster.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_") or k == "MUSTER_PORTS"}
        argv = [sys.executable, "-m", "muster", "up", "--port", str(self.port), "--servers", str(self.servers),
                "--data", str(self.root / "data"), *self.args]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **self.env}, stderr=log, stdout=log
            )
        self.wait_for("muster: serving MCP at", 90)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, line: str, timeout: float, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.text()[after:]:
            assert self.process is not None
            assert self.process.poll() is None, f"muster up exited: {self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {line!r} within {timeout} s: {self.text()[-3000:]}"
            time.sleep(0.1)

    def children(self, module: str) -> list[psutil.Process]:
        assert self.process is not None
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if module in child.cmdline():
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGINT)  # the second one stops at once
                self.process.wait(10)


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StandIn]]:
    root = tmp_path_factory.mktemp("upstreams")
    stack = Stack(root, log=lambda m: print(m, file=sys.stderr))
    found = {}
    try:
        for name in ("alpha", "beta"):
            port = free_port()
            stack.python(name, "demo.kubernetes", "--cluster", name, "--port", str(port), "--destructive",
                         env={"PYTHONPATH": str(ROOT)})  # fmt: skip
            stack.wait_tcp(port, name)
            found[name] = StandIn(name, port)
        yield found
    finally:
        stack.stop()


def servers_folder(root: Path, upstreams: dict[str, StandIn]) -> Path:
    folder = root / "servers"
    folder.mkdir()
    for name, standin in upstreams.items():
        (folder / f"{name}.yaml").write_text(server_yaml(name, standin.url))
    return folder


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, StandIn]) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("up")
    muster = Up(root, servers_folder(root, upstreams), env=FAST_RECLAIM)
    try:
        muster.start()
        wait_tools(muster, 16)  # both stand-ins, destructive: 8 tools each
        yield muster
    finally:
        muster.stop()


def wait_tools(muster: Up, count: int) -> None:
    """Until the ingress lists `count` tools: ready is not yet listed (discovery lists each server first)."""
    deadline = time.monotonic() + 30
    while len(tool_names(muster.url)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} tools listed after 30 s"
        time.sleep(0.2)


NS = {"resourceType": "namespaces", "name": "default"}
CM = {"resourceType": "configmaps", "name": "web-config", "namespace": "org-acme"}


async def call(client: httpx.AsyncClient, url: str, session: str, n: int, tool: str, args: dict[str, Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": tool, "arguments": args}}
    response = await client.post(url, headers={**HEADERS, "Mcp-Session-Id": session}, json=body)
    return response.status_code, response.json()


def test_a_worker_killed_with_200_calls_in_flight_is_back_within_seconds_and_every_call_has_one_outcome(
    up: Up, upstreams: dict[str, StandIn]
) -> None:
    alpha = upstreams["alpha"]
    alpha.fault(action="delay", seconds=2, count=200)
    before = alpha.stats()
    session = initialize(up.url)
    workers = up.children("services.worker")
    assert len(workers) == 2
    victim = workers[0]
    mark = len(up.text())
    outcomes: dict[int, Any] = {}

    async def one(client: httpx.AsyncClient, n: int) -> None:
        tool, args = ("x_alpha_get", NS) if n % 2 else ("x_alpha_delete", CM)
        outcomes[n] = await call(client, up.url, session, n, tool, args)

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=256)
        with anyio.fail_after(90):
            async with httpx.AsyncClient(timeout=60, limits=limits) as client, anyio.create_task_group() as tg:
                for n in range(200):
                    tg.start_soon(one, client, n)
                with anyio.fail_after(20):
                    while alpha.stats()["running"] - before["running"] < 100:
                        await anyio.sleep(0.05)
                victim.send_signal(signal.SIGKILL)
                killed.append(time.monotonic())

    killed: list[float] = []
    anyio.run(scenario)
    # every call: exactly one answer (one HTTP response each), a result or, for a destructive call the dead worker
    # had sent upstream, "outcome unknown"
    assert sorted(outcomes) == list(range(200))
    unknown = 0
    for n, (status, message) in outcomes.items():
        assert status == 200 and message["id"] == n
        if n % 2:
            assert message["result"]["isError"] is False, message  # read-only: run again by a live worker
        elif "error" in message:
            assert message["error"]["code"] == -32005, message
            unknown += 1
    after = alpha.stats()
    ran = after["started"].get("delete", 0) - before["started"].get("delete", 0)
    answered = 100 - unknown
    assert answered <= ran <= 100, "no destructive call ran twice upstream"
    # the supervisor started the worker again, under a new consumer name, and the stack kept serving meanwhile
    up.wait_for("worker 1 exited (killed by SIGKILL); starting it again", 5, after=mark)
    up.wait_for("worker 1 started again", 10, after=mark)
    back = time.monotonic() - killed[0]
    print(f"worker SIGKILL: {answered} destructive answered, {unknown} outcome unknown, {ran} ran; back: {back:.1f} s")
    assert len(up.children("services.worker")) == 2 and victim.pid not in [w.pid for w in up.children("worker")]


def test_a_malformed_server_file_added_while_serving_stops_nothing(up: Up, upstreams: dict[str, StandIn]) -> None:
    discovery = up.children("services.discovery")
    assert len(discovery) == 1
    mark = len(up.text())
    (up.servers / "broken.yaml").write_text("kind: MCPServer\nspec: [unclosed\n  url: :\n")
    (up.servers / "nameless.yaml").write_text(server_yaml("", "http://127.0.0.1:1/mcp"))
    (up.servers / "gamma.yaml").write_text(server_yaml("gamma", "not a url at all"))
    up.wait_for("broken.yaml", 10, after=mark)  # discovery says which file it refused
    time.sleep(1.0)
    names = tool_names(up.url)
    assert {"x_alpha_get", "x_beta_get"} <= set(names) and len([n for n in names if n.startswith("x_alpha_")]) == 8
    status, message = anyio.run(one_call, up.url)
    assert status == 200 and message["result"]["isError"] is False
    assert [p.pid for p in up.children("services.discovery")] == [discovery[0].pid], "discovery never died"
    assert "discovery exited" not in up.text()[mark:]
    for name in ("broken", "nameless", "gamma"):
        (up.servers / f"{name}.yaml").unlink()


async def one_call(url: str) -> Any:
    session = await anyio.to_thread.run_sync(initialize, url)
    async with httpx.AsyncClient(timeout=30) as client:
        return await call(client, url, session, 1, "x_beta_get", NS)


async def call_cut_short(url: str) -> None:
    try:
        status, message = await one_call(url)
    except httpx.RemoteProtocolError:  # what a second Ctrl-C does to a call still in flight
        return
    pytest.fail(f"the call was answered ({status}: {message}) instead of cut short by the second Ctrl-C")


def test_a_child_that_keeps_crashing_stops_the_stack_with_a_message_that_names_it(
    tmp_path: Path, upstreams: dict[str, StandIn]
) -> None:
    muster = Up(tmp_path, servers_folder(tmp_path, upstreams), args=["--workers", "1"])
    try:
        muster.start()
        for n in range(5):
            found: list[psutil.Process] = []
            deadline = time.monotonic() + 30
            while not found:
                assert time.monotonic() < deadline, "discovery was not started again"
                found = [p for p in muster.children("services.discovery") if p.is_running()]
                time.sleep(0.1)
            found[0].send_signal(signal.SIGKILL)
            if n < 4:
                muster.wait_for(f"crash {n + 1} of 5 allowed", 10)
        assert muster.process is not None
        assert muster.process.wait(60) == 1
        text = muster.text()
        assert "muster: error: discovery exited 5 times within 60 s (last: killed by SIGKILL); stopping muster" in text
        assert "Traceback" not in text
    finally:
        muster.stop()


def test_a_second_ctrl_c_stops_everything_at_once_without_a_traceback(
    tmp_path: Path, upstreams: dict[str, StandIn]
) -> None:
    muster = Up(tmp_path, servers_folder(tmp_path, upstreams), args=["--workers", "1"])
    beta = upstreams["beta"]
    try:
        muster.start()
        wait_tools(muster, 16)
        children = psutil.Process(muster.process.pid).children(recursive=True)  # type: ignore[union-attr]
        beta.fault(action="delay", tool="get", seconds=30, count=1)

        async def scenario() -> None:
            with anyio.fail_after(60):
                await stop_twice()

        async def stop_twice() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_cut_short, muster.url)  # it holds the ingress's drain up
                with anyio.fail_after(20):
                    while beta.stats()["running"] < 1:
                        await anyio.sleep(0.05)
                muster.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
                await anyio.to_thread.run_sync(muster.wait_for, "draining", 20)
                started = time.monotonic()
                muster.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
                code = await anyio.to_thread.run_sync(muster.process.wait, 10)  # type: ignore[union-attr]
                assert code == 130 and time.monotonic() - started < 3
                tg.cancel_scope.cancel()

        anyio.run(scenario)
        assert "muster: stopped at once" in muster.text() and "Traceback" not in muster.text()
        _, alive = psutil.wait_procs(children, timeout=5)
        assert alive == [], f"left behind: {[p.pid for p in alive]}"
    finally:
        beta.clear_faults()
        muster.stop()
