"""Upstream sessions follow agent sessions, through the whole stack with two workers: what an agent does in its
MCP session stays that agent's at the upstream whichever worker runs its next call, what the upstream sends
outside a call reaches that agent, and the agent's session ending (DELETE, or expiry) ends its upstream sessions.

The upstreams: server-everything (the TypeScript SDK's reference server: session-scoped resources, per-session
log levels, logs and roots requests on its GET stream, 400 for a session it does not know), alone behind muster
so that what muster does not list (a session's own resource) passes through to it; and the stand-in of
mcp-kubernetes, which counts the DELETEs it gets.
"""

import asyncio
import base64
import gzip
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest

from muster.stack import Child, free_port
from shared import streams
from shared.valkey import connect
from tests.conformance import tools
from tests.conftest import HEADERS, Muster, StandIn, initialize, make_muster, mcp_client

pytestmark = [
    pytest.mark.slow,
    pytest.mark.anyio,
    # logging and roots are deprecated as of 2026-07-28; these tests exercise them on purpose
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

NS = {"resourceType": "namespaces", "name": "default"}


def start_everything(m: Muster, port: int) -> Child:
    command = [str(tools.NODE), "--require", str(tools.LOOPBACK), str(tools.EVERYTHING), "streamableHttp"]
    child = m.stack.start("server-everything", command, {"PORT": str(port)}, quiet=True)
    m.stack.wait_tcp(port, "server-everything")
    return child


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Muster, int]]:
    tools.ensure()
    for m in make_muster(tmp_path_factory.mktemp("everything")):
        port = free_port()
        start_everything(m, port)
        m.register("everything", f"http://127.0.0.1:{port}/mcp")
        m.discovery(prefix_mode="never")
        m.worker()
        m.worker()
        m.ingress()
        m.wait_tools({"echo", "gzip-file-as-resource", "toggle-simulated-logging"})
        yield m, port


async def test_resources_a_tool_created_for_its_session_are_read_back_six_of_six(
    everything: tuple[Muster, int],
) -> None:
    m, _ = everything

    async def create_and_read(n: int) -> bool:
        text = f"note {n} of its own session"
        data = "data:text/plain;base64," + base64.b64encode(text.encode()).decode()
        async with mcp_client(m.url(), mode="legacy") as client:
            made = await client.call_tool("gzip-file-as-resource", {"name": f"note-{n}.gz", "data": data})
            link = made.content[0]
            assert isinstance(link, types.ResourceLink)
            for _ in range(3):  # whichever worker reads it
                read = await client.read_resource(str(link.uri))
                blob = read.contents[0]
                assert isinstance(blob, types.BlobResourceContents)
                if gzip.decompress(base64.b64decode(blob.blob)).decode() != text:
                    return False
        return True

    with anyio.fail_after(60):
        read_back = await asyncio.gather(*(create_and_read(n) for n in range(6)))
    assert read_back == [True] * 6


async def test_one_agents_log_level_is_its_own_and_logs_outside_a_call_reach_its_get_stream(
    everything: tuple[Muster, int],
) -> None:
    """server-everything logs a random level every 5 s on each session's GET stream, at or above that session's
    level: an agent that set "emergency" gets only emergencies, and the others every level."""
    m, _ = everything
    logs: dict[str, list[str]] = {"before": [], "after": [], "none": []}

    def collect(name: str) -> Any:
        async def log(params: types.LoggingMessageNotificationParams) -> None:
            if "SessionId" in str(params.data):
                logs[name].append(params.level)

        return log

    async with (
        mcp_client(m.url(), mode="legacy", logging_callback=collect("before")) as before,
        mcp_client(m.url(), mode="legacy", logging_callback=collect("after")) as after,
        mcp_client(m.url(), mode="legacy", logging_callback=collect("none")) as none,
    ):
        await before.set_logging_level("emergency")  # before its upstream session exists: applied when opened
        for client in (before, after, none):
            await client.call_tool("toggle-simulated-logging", {})
        await after.set_logging_level("emergency")  # to the upstream session it has, through the queue
        logs["after"].clear()
        with anyio.fail_after(25):  # one message at once, then one every 5 s
            while len(logs["none"]) < 3 or set(logs["none"]) == {"emergency"}:
                await anyio.sleep(0.1)
        await anyio.sleep(0.5)  # the others' messages of the same tick
        for client in (before, after, none):
            await client.call_tool("toggle-simulated-logging", {})
    assert set(logs["before"]) <= {"emergency"} and set(logs["after"]) <= {"emergency"}, logs
    assert set(logs["none"]) - {"emergency"}, logs


async def test_the_upstreams_roots_request_is_answered_by_the_agent(everything: tuple[Muster, int]) -> None:
    m, _ = everything

    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///agent/project", name="project")])

    async with mcp_client(m.url(), mode="legacy", list_roots_callback=roots) as client:
        with anyio.fail_after(15):
            listed = await client.call_tool("get-roots-list", {})
            again = await client.call_tool("get-roots-list", {})  # the server asked once: what it knows since
    for result in (listed, again):
        content = result.content[0]
        assert isinstance(content, types.TextContent) and "file:///agent/project" in content.text, content


async def test_a_restarted_upstream_is_opened_again_transparently(everything: tuple[Muster, int]) -> None:
    """server-everything forgets its sessions when it restarts, and answers their id with HTTP 400."""
    m, port = everything
    async with mcp_client(m.url(), mode="legacy") as client:
        for n in range(2):  # both workers hold the session
            result = await client.call_tool("echo", {"message": f"before {n}"})
            assert not result.is_error
        old = next(c for c in m.stack.children if c.name == "server-everything")
        m.stack.stop_child(old)
        start_everything(m, port)
        with anyio.fail_after(20):
            for n in range(4):
                result = await client.call_tool("echo", {"message": f"after {n}"})
                content = result.content[0]
                assert not result.is_error and isinstance(content, types.TextContent)
                assert content.text == f"Echo: after {n}"


SHORT_TTL = 3


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Muster, StandIn]]:
    for m in make_muster(tmp_path_factory.mktemp("standin")):
        k8s = m.standin("k8s")
        m.env["MUSTER_DISCOVERY_REFRESH_SECONDS"] = "3600"  # its listings DELETE their sessions too: not meanwhile
        m.discovery()
        m.worker(MUSTER_WORKER_JANITOR_SECONDS="0.3")
        m.worker(MUSTER_WORKER_JANITOR_SECONDS="0.3")
        m.ingress(MUSTER_INGRESS_SESSION_TTL=str(SHORT_TTL), MUSTER_INGRESS_SESSION_RECHECK="0")
        m.wait_tools({"x_k8s_get"})
        yield m, k8s


def deleted(k8s: StandIn) -> int:
    count: int = k8s.stats()["requests"].get("DELETE 200", 0)
    return count


async def call(url: str, session: str, n: int) -> None:
    headers = {**HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "x_k8s_get", "arguments": NS}}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(url, headers=headers, json=body)
    assert response.status_code == 200 and "result" in response.json(), response.text


async def test_the_agents_delete_ends_its_upstream_session_once(standin: tuple[Muster, StandIn]) -> None:
    m, k8s = standin
    before = deleted(k8s)
    session = initialize(m.url())
    for n in range(4):  # on both workers
        await call(m.url(), session, n)
    valkey = connect(m.valkey_url)
    try:
        bindings: Any = await valkey.hgetall(streams.upstream_sessions(session))
    finally:
        await valkey.aclose()
    assert list(bindings) == [b"k8s"]  # one upstream session for the agent session
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.delete(m.url(), headers={"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"})
    assert response.status_code == 200
    with anyio.fail_after(5):
        while deleted(k8s) == before:
            await anyio.sleep(0.05)
    await anyio.sleep(1.0)  # the other worker, and the janitor, had their chance to send a second
    assert deleted(k8s) == before + 1


async def test_an_expired_agent_session_ends_its_upstream_session(standin: tuple[Muster, StandIn]) -> None:
    m, k8s = standin
    before = deleted(k8s)
    session = initialize(m.url())
    await call(m.url(), session, 1)
    started = time.monotonic()
    with anyio.fail_after(SHORT_TTL + 5):
        while deleted(k8s) == before:
            await anyio.sleep(0.05)
    assert time.monotonic() - started >= SHORT_TTL - 1  # not before the session expired
    await anyio.sleep(1.0)
    assert deleted(k8s) == before + 1
