"""Two demo clusters in one family, end to end, in direct and in meta mode: one tool per tool name with a
`management_cluster` selector; each value reaches its own cluster; a member that stops leaves the enum (with
list_changed) while the family keeps working; and after every muster process restarts, the family tool answers
at once, in a session that never lists tools again."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from muster.stack import Child
from shared import records
from shared.valkey import connect
from tests.conftest import HEADERS, Muster, StandIn, initialize, make_muster, mcp_client

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

FAMILY = {"name": "mc", "instanceArg": "management_cluster"}
CLUSTERS = ("gazelle", "graveler")
DIRECT, META = 0, 1  # ingress replicas: one per exposure mode
PODS = {"resourceType": "pods", "namespace": "org-acme"}


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        for cluster in CLUSTERS:
            m.standin(cluster, family=FAMILY, toolPrefix=cluster)
        # A server that stops is noticed at the next listing (each second) and leaves after one second of grace.
        m.discovery(
            MUSTER_DISCOVERY_REFRESH_SECONDS="1",
            MUSTER_DISCOVERY_GRACE_SECONDS="1",
            MUSTER_DISCOVERY_RETRY_MAX_SECONDS="0.5",
        )
        m.worker()
        m.ingress()
        m.ingress(MUSTER_EXPOSE="meta")
        m.wait_tools({"x_mc_list", "x_mc_get"}, n=DIRECT)
        yield m


def enum(tool: dict[str, Any]) -> list[str]:
    found: list[str] = tool["inputSchema"]["properties"]["management_cluster"]["enum"]
    return found


def listed(muster: Muster) -> dict[str, dict[str, Any]]:
    session = initialize(muster.url(DIRECT))
    headers = {**HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    response = httpx.post(muster.url(DIRECT), headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    return {t["name"]: t for t in response.json()["result"]["tools"]}


def text(result: types.CallToolResult) -> str:
    item = result.content[0]
    assert isinstance(item, types.TextContent)
    return item.text


async def call_direct(client: Client, cluster: str, arguments: dict[str, Any] = PODS) -> str:
    result = await client.call_tool("x_mc_list", {"management_cluster": cluster, **arguments})
    assert not result.is_error, text(result)
    return text(result)


async def call_meta(client: Client, cluster: str, arguments: dict[str, Any] = PODS) -> str:
    wrapped = {"name": "x_mc_list", "arguments": {"management_cluster": cluster, **arguments}}
    envelope = json.loads(text(await client.call_tool("call_tool", wrapped)))
    assert envelope["isError"] is False, envelope
    inner: str = envelope["content"][0]["text"]
    return inner


def calls(standin: StandIn) -> int:
    count: int = standin.stats()["tools"].get("list", 0)
    return count


async def test_two_clusters_in_one_family_are_one_tool_per_name_with_an_enum_of_both(muster: Muster) -> None:
    tools = listed(muster)
    assert not any(name.startswith(("x_gazelle_", "x_graveler_")) for name in tools)
    assert {"x_mc_list", "x_mc_get", "x_mc_describe", "x_mc_logs"} <= set(tools)
    for tool in tools.values():
        assert enum(tool) == ["gazelle", "graveler"]
        assert "management_cluster" in tool["inputSchema"]["required"]
        assert tool["description"].endswith(" (available on servers: gazelle, graveler)")
    async with mcp_client(muster.url(META)) as client:
        described = json.loads(text(await client.call_tool("describe_tool", {"name": "x_mc_list"})))
    assert described["inputSchema"] == tools["x_mc_list"]["inputSchema"]


async def test_each_value_of_the_selector_reaches_its_own_cluster(muster: Muster) -> None:
    standins = muster.standins
    async with mcp_client(muster.url(DIRECT)) as direct, mcp_client(muster.url(META)) as meta:
        for call in (call_direct, call_meta):
            for cluster in CLUSTERS:
                before = {c: calls(standins[c]) for c in CLUSTERS}
                answer = await call(direct if call is call_direct else meta, cluster)
                after = {c: calls(standins[c]) for c in CLUSTERS}
                other = next(c for c in CLUSTERS if c != cluster)
                assert after[cluster] == before[cluster] + 1 and after[other] == before[other]
                # graveler's org-acme has a crash-looping pod, gazelle's has none (demo/kubernetes/objects.py)
                assert ("CrashLoopBackOff" in answer) == (cluster == "graveler"), answer


@asynccontextmanager
async def event_stream(muster: Muster) -> AsyncIterator[tuple[httpx.Response, list[dict[str, Any]]]]:
    """An open GET stream of a new session at the direct replica, with the messages read from it so far."""
    session = initialize(muster.url(DIRECT))
    headers = {**HEADERS, "Mcp-Session-Id": session, "Accept": "text/event-stream"}
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("GET", muster.url(DIRECT), headers=headers) as stream,
    ):
        assert stream.status_code == 200
        yield stream, []


async def next_message(stream: httpx.Response, seen: list[dict[str, Any]]) -> dict[str, Any]:
    async for line in stream.aiter_lines():
        if line.startswith("data: "):
            seen.append(json.loads(line[6:]))
            return seen[-1]
    raise AssertionError("the event stream ended")


def restart_standin(muster: Muster, cluster: str) -> None:
    port = muster.standins[cluster].port
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    muster.stack.python(f"standin {cluster}", "demo.kubernetes", "--cluster", cluster, "--port", str(port), env=env)
    muster.stack.wait_tcp(port, f"standin {cluster}")


def child(muster: Muster, name: str) -> Child:
    return next(c for c in muster.stack.children if c.name == name)


async def test_a_member_that_stops_leaves_the_enum_with_list_changed_and_the_family_keeps_working(
    muster: Muster,
) -> None:
    async with (
        event_stream(muster) as (stream, seen),
        mcp_client(muster.url(DIRECT)) as direct,
        mcp_client(muster.url(META)) as meta,
    ):
        await asyncio.sleep(0.2)
        muster.stack.stop_child(child(muster, "standin gazelle"))
        stopped = time.monotonic()
        # within its grace, and after it, the other member answers in both modes
        assert "CrashLoopBackOff" in await call_direct(direct, "graveler")
        assert "CrashLoopBackOff" in await call_meta(meta, "graveler")
        with anyio.fail_after(10):
            message = await next_message(stream, seen)
        assert message == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        noticed = time.monotonic() - stopped
        tools = listed(muster)
        assert {"x_mc_list", "x_mc_get"} <= set(tools)  # the names stay
        assert enum(tools["x_mc_list"]) == ["graveler"]
        assert tools["x_mc_list"]["description"].endswith(" (available on servers: graveler)")
        described = json.loads(text(await meta.call_tool("describe_tool", {"name": "x_mc_list"})))
        assert enum(described) == ["graveler"]
        assert "CrashLoopBackOff" in await call_direct(direct, "graveler")
        assert "CrashLoopBackOff" in await call_meta(meta, "graveler")
        with pytest.raises(MCPError) as refused:
            await call_direct(direct, "gazelle")
        assert refused.value.error.code == -32602
        assert 'not available on server "gazelle" (available: graveler)' in refused.value.error.message
        envelope = json.loads(text(await meta.call_tool("call_tool", {"name": "x_mc_list", "arguments": PODS})))
        assert envelope["isError"] is True
        assert envelope["content"][0]["text"] == (
            "Tool execution failed: tool x_mc_list is provided by a family on servers graveler; "
            'the "management_cluster" parameter is required'
        )
        restart_standin(muster, "gazelle")
        with anyio.fail_after(10):
            while enum(listed(muster)["x_mc_list"]) != ["gazelle", "graveler"]:
                await asyncio.sleep(0.1)
        assert "CrashLoopBackOff" not in await call_direct(direct, "gazelle")
    assert noticed < 6


async def test_after_every_muster_process_restarts_the_family_tool_answers_at_once(muster: Muster) -> None:
    client = connect(muster.valkey_url, name="test")
    try:
        before = await records.load(client)
    finally:
        await client.aclose()
    listings = {c: muster.standins[c].stats()["methods"].get("tools/list", 0) for c in CLUSTERS}
    async with mcp_client(muster.url(DIRECT)) as direct, mcp_client(muster.url(META)) as meta:
        await call_direct(direct, "gazelle")
        await call_meta(meta, "graveler")
        restart_everything(muster)
        # the same sessions, no tools/list: the routes come from the records alone
        assert "CrashLoopBackOff" in await call_direct(direct, "graveler")
        assert "CrashLoopBackOff" in await call_meta(meta, "graveler")
        assert "CrashLoopBackOff" not in await call_direct(direct, "gazelle")
        # and they keep answering while the new discovery lists the servers again
        with anyio.fail_after(15):
            while any(muster.standins[c].stats()["methods"].get("tools/list", 0) <= listings[c] for c in CLUSTERS):
                await call_meta(meta, "gazelle")
                await asyncio.sleep(0.1)
        await call_direct(direct, "gazelle")
    client = connect(muster.valkey_url, name="test")
    try:
        after = await records.load(client)
    finally:
        await client.aclose()
    # a restarted discovery adopted what was published: no record went through "Connecting" and back
    assert {n: (r.revision, r.state) for n, r in after.items() if r} == {
        n: (r.revision, r.state) for n, r in before.items() if r
    }


def restart_everything(muster: Muster) -> None:
    """Stops ingress replicas, the worker, discovery and Valkey, then starts them again on the same ports."""
    stack, port = muster.stack, int(muster.valkey_url.rsplit(":", 1)[1].split("/")[0])
    ingresses = [(p, child(muster, f"ingress {p}")) for p in muster.ingress_ports]
    for _, ingress in ingresses:
        stack.stop_child(ingress)
    for worker in muster.workers:
        stack.stop_child(worker)
    stack.stop_child(child(muster, "discovery"))
    stack.stop_child(child(muster, "valkey"))
    assert stack.valkey(port) == muster.valkey_url  # the same append-only file
    muster.discovery(
        MUSTER_DISCOVERY_REFRESH_SECONDS="1",
        MUSTER_DISCOVERY_GRACE_SECONDS="1",
        MUSTER_DISCOVERY_RETRY_MAX_SECONDS="0.5",
    )
    muster.workers = []
    muster.worker()
    for n, (ingress_port, old) in enumerate(ingresses):
        stack.start(old.name, old.argv, {k: v for k, v in old.env.items()})
        stack.wait_http(f"http://127.0.0.1:{ingress_port}/readyz", f"ingress {n}")
