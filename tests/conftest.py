"""Real parts for every test that crosses a process boundary: a valkey-server, stand-in upstreams, and muster's
own services, each a process on 127.0.0.1, started by the same code that `muster up` uses."""

import functools
import inspect
import json
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from muster.stack import Stack, free_port
from shared import streams
from shared.valkey import connect
from tests.conformance import tools

ROOT = Path(__file__).resolve().parent.parent


def _ports_of_this_test_process() -> str:
    """Ports 20000-31999, below the kernel's ephemeral range (32768 up), split among pytest-xdist's processes: a
    port free_port picked is not taken before its server binds it, by another test process or by an outgoing
    connection (the cause of a sign-in test once reaching another test's server)."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = 12_000 // max(count, 1)
    return f"{20_000 + index * size}-{20_000 + (index + 1) * size - 1}"


os.environ.setdefault("MUSTER_PORTS", _ports_of_this_test_process())  # children inherit it (muster up's own picks)
ONE_AGENT_SHARE = 1024  # MUSTER_INGRESS_FAIR_SHARE of the tests' stacks


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# pytest-timeout interrupts a test that overran its time with a signal; in an async test stuck on an await that
# leaves the test's coroutine waiting in anyio's runner, so the fixtures' teardown (run by the same runner) waits
# behind it for ever and the whole run hangs with no report. An async test is therefore given a deadline of its own
# a little before pytest-timeout's: it fails with the traceback of where it waited, and its teardown runs.
OWN_DEADLINE_MARGIN = 5.0
_STARTED = pytest.StashKey[float]()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_STARTED] = time.monotonic()
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> None:
    test = pyfuncitem.obj
    marker = pyfuncitem.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker is not None and marker.args else float(pyfuncitem.config.getini("timeout"))
    if not inspect.iscoroutinefunction(test) or limit <= 0:
        return
    left = limit - (time.monotonic() - pyfuncitem.stash.get(_STARTED, time.monotonic())) - OWN_DEADLINE_MARGIN
    pyfuncitem.obj = _within(test, max(left, 1.0))


def _within(test: Callable[..., Any], seconds: float) -> Callable[..., Any]:
    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        with anyio.fail_after(seconds):
            return await test(*args, **kwargs)

    return bounded


@dataclass
class StandIn:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def fault(self, **spec: Any) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_standin/faults", json=spec).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"http://127.0.0.1:{self.port}/_standin/faults").raise_for_status()

    def fixture_stats(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.port}/_fixture/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def update(self, uri: str) -> int:
        response = httpx.post(f"http://127.0.0.1:{self.port}/_fixture/update", params={"uri": uri})
        response.raise_for_status()
        sent: int = response.json()["sent"]
        return sent

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.port}/_standin/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def server_yaml(name: str, url: str, **spec: Any) -> str:
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in spec.items())
    return (
        textwrap.dedent(f"""\
        apiVersion: muster.giantswarm.io/v1alpha1
        kind: MCPServer
        metadata:
          name: {name}
        spec:
          type: streamable-http
          url: {url}
        """)
        + extra
    )


@dataclass
class Muster:
    """One muster stack in a temporary folder, with helpers to grow it."""

    root: Path
    stack: Stack = field(init=False)
    valkey_url: str = ""
    servers: Path = field(init=False)
    standins: dict[str, StandIn] = field(default_factory=dict)
    ingress_ports: list[int] = field(default_factory=list)
    workers: list[Any] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stack = Stack(self.root, log=lambda m: print(m, file=sys.stderr))
        self.servers = self.root / "servers"
        self.servers.mkdir()

    def start_valkey(self, maxmemory: str = "1gb", appendfsync: str = "everysec") -> None:
        self.valkey_url = self.stack.valkey(free_port(), maxmemory=maxmemory, appendfsync=appendfsync)
        self.env = {
            "MUSTER_VALKEY_URL": self.valkey_url,
            "MUSTER_LOG_JSON": "false",
            "MUSTER_DISCOVERY_REFRESH_SECONDS": "5",
            # Tests that load a server from one agent session count on its calls running at once, beyond the
            # default fair share (8); test_fairness runs with the default.
            "MUSTER_INGRESS_FAIR_SHARE": str(ONE_AGENT_SHARE),
            # A test's stack stops within seconds even with calls hung upstream (the default drains wait 20 s, and
            # the stack kills a child after 10); test_drain sets its own.
            "MUSTER_INGRESS_DRAIN_SECONDS": "2",
            "MUSTER_WORKER_DRAIN_SECONDS": "2",
            "PYTHONPATH": str(ROOT),
        }

    def standin(self, cluster: str, *args: str, register: bool = True, port: int | None = None, **spec: Any) -> StandIn:
        port = port or free_port()
        self.stack.python(
            f"standin {cluster}",
            "demo.kubernetes",
            "--cluster",
            cluster,
            "--port",
            str(port),
            *args,
            env={"PYTHONPATH": str(ROOT)},
        )
        self.stack.wait_tcp(port, f"standin {cluster}")
        standin = self.standins[cluster] = StandIn(cluster, port)
        if register:
            self.register(cluster, standin.url, **spec)
        return standin

    def fixture_server(self, name: str = "fixture", register: bool = True) -> StandIn:
        """The conformance fixtures (tests/fixtures/conformance_server.py), as one more upstream."""
        port = free_port()
        self.stack.python(name, "tests.fixtures.conformance_server", "--port", str(port), env={"PYTHONPATH": str(ROOT)})
        self.stack.wait_tcp(port, name)
        server = self.standins[name] = StandIn(name, port)
        if register:
            self.register(name, server.url)
        return server

    def raw_server(self, name: str = "raw", register: bool = True) -> StandIn:
        """The hand-written server of tests/fixtures/raw_server.py, which answers with bytes no SDK writes."""
        port = free_port()
        self.stack.python(name, "tests.fixtures.raw_server", "--port", str(port), env={"PYTHONPATH": str(ROOT)})
        self.stack.wait_tcp(port, name)
        server = self.standins[name] = StandIn(name, port)
        if register:
            self.register(name, server.url)
        return server

    def ts_fixture_server(self, name: str = "ts-fixture", register: bool = True) -> StandIn:
        """The conformance fixtures written with the TypeScript SDK (tests/conformance/ts_server.cjs)."""
        port = free_port()
        self.stack.start(name, tools.node(tools.TS_SERVER, "--port", str(port)), tools.node_env())
        self.stack.wait_tcp(port, name)
        server = self.standins[name] = StandIn(name, port)
        if register:
            self.register(name, server.url)
        return server

    def everything_server(self, name: str = "everything", register: bool = True) -> str:
        """server-everything, the reference upstream from npm; returns its URL."""
        port = free_port()
        command = [str(tools.NODE), "--require", str(tools.LOOPBACK), str(tools.EVERYTHING), "streamableHttp"]
        self.stack.start(name, command, {"PORT": str(port)}, quiet=True)
        self.stack.wait_tcp(port, name)
        url = f"http://127.0.0.1:{port}/mcp"
        if register:
            self.register(name, url)
        return url

    def register(self, name: str, url: str, **spec: Any) -> None:
        (self.servers / f"{name}.yaml").write_text(server_yaml(name, url, **spec))

    def discovery(self, prefix_mode: str = "always", **env: str) -> None:
        self.stack.python(
            "discovery",
            "services.discovery",
            env={**self.env, "MUSTER_SERVERS": str(self.servers), "MUSTER_PREFIX_MODE": prefix_mode, **env},
        )

    def worker(self, worker_id: str | None = None, **env: str) -> Any:
        """A worker; `worker_id` the id of one that ran before (a restart), else a new one."""
        worker_id = worker_id or f"test-worker-{len(self.workers) + 1}-{os.getpid()}"
        child = self.stack.python(worker_id, "services.worker", env={**self.env, "MUSTER_WORKER_ID": worker_id, **env})
        self.workers.append(child)
        return child

    def beating(self, child: Any, timeout: float = 30.0) -> Any:
        """Waits until a worker's heartbeat advances (it runs, and reads its servers' queues); returns it."""
        deadline = time.monotonic() + timeout
        with SyncRedis.from_url(self.valkey_url) as valkey:
            first = int(valkey.get(streams.worker_beat(child.name)) or 0)
            while int(valkey.get(streams.worker_beat(child.name)) or 0) < first + 2:
                assert time.monotonic() < deadline, f"{child.name} did not start beating within {timeout:.0f} s"
                self.stack.check()
                time.sleep(0.05)
        return child

    def ingress(self, **env: str) -> str:
        return self.ingress_at(free_port(), **env)

    def ingress_at(self, port: int, **env: str) -> str:
        """An ingress on this port (one that had to be known before it started, as a public URL's)."""
        self.stack.python(f"ingress {port}", "services.ingress", env={**self.env, "MUSTER_PORT": str(port), **env})
        self.stack.wait_http(f"http://127.0.0.1:{port}/readyz", "ingress")
        self.ingress_ports.append(port)
        return f"http://127.0.0.1:{port}/mcp"

    def url(self, n: int = 0) -> str:
        return f"http://127.0.0.1:{self.ingress_ports[n]}/mcp"

    def wait_tools(self, count: int | set[str], timeout: float = 20.0, n: int = 0) -> list[str]:
        """Waits until the ingress lists `count` tools (or at least these tools); returns their names."""
        deadline = time.monotonic() + timeout
        names: list[str] = []
        while time.monotonic() < deadline:
            names = tool_names(self.url(n))
            if len(names) == count if isinstance(count, int) else count <= set(names):
                return names
            time.sleep(0.1)
        raise AssertionError(f"expected {count} tools, the ingress lists {len(names)}: {names}")


HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
NS = {"resourceType": "namespaces", "name": "default"}  # arguments of a stand-in's read-only `get`
DELETE = {"resourceType": "configmaps", "name": "web-config", "namespace": "org-acme"}  # its `delete`: not safe twice


def body(n: int, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


@asynccontextmanager
async def both_running(
    standin: "StandIn", url: str, headers: dict[str, str]
) -> AsyncIterator[dict[str, httpx.Response]]:
    """A read-only call ("safe") and a destructive one ("unsafe") to the stand-in in flight and both running there;
    the mapping gets their responses once the block is left."""
    answers: dict[str, httpx.Response] = {}

    async def call(name: str, n: int, tool: str, arguments: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            answers[name] = await client.post(url, headers=headers, json=body(n, tool, arguments))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "safe", 1, f"x_{standin.name}_get", NS)
            tg.start_soon(call, "unsafe", 2, f"x_{standin.name}_delete", DELETE)
            while standin.stats()["running"] < 2:
                await anyio.sleep(0.05)
            yield answers


def result(response: httpx.Response) -> Any:
    """The JSON-RPC message of a response, whether it came as JSON or as an event stream."""
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = [line[6:] for line in text.splitlines() if line.startswith("data: ") and line[6:].strip()][-1]
    return json.loads(text)


def initialize(url: str) -> str:
    response = httpx.post(
        url,
        headers=HEADERS,
        json={
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        },
    )
    response.raise_for_status()
    return response.headers["mcp-session-id"]


def tool_names(url: str) -> list[str]:
    session = initialize(url)
    headers = {**HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    response = httpx.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    return [t["name"] for t in result(response)["result"]["tools"]]


@asynccontextmanager
async def mcp_client(url: str, **kwargs: Any) -> Any:
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), **kwargs) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One valkey-server for the tests of single modules; each test starts from an empty database (`valkey`)."""
    stack = Stack(tmp_path_factory.mktemp("valkey"), log=lambda m: print(m, file=sys.stderr))
    try:
        yield stack.valkey(free_port())
    finally:
        stack.stop()


@pytest.fixture
async def valkey(valkey_url: str) -> AsyncIterator[Redis]:
    client = connect(valkey_url, name="muster-test")
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


async def entries(client: Redis, stream: str | bytes) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of a stream, oldest first."""
    found: Any = await client.xrange(stream)
    return [(entry_id, fields) for entry_id, fields in found]


@pytest.fixture(scope="module")
def muster_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("muster")


def make_muster(root: Path, appendfsync: str = "everysec", *, maxmemory: str = "1gb") -> Iterator[Muster]:
    m = Muster(root)
    try:
        m.start_valkey(maxmemory, appendfsync)
        yield m
    finally:
        m.stack.stop()
