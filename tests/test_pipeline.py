"""The spine end to end: two ingress replicas, two workers, two upstreams, discovery on a folder."""

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import HEADERS, Muster, initialize, make_muster, mcp_client, server_yaml

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.standin("alpha")
        m.standin("beta")
        m.discovery()
        m.worker()
        m.worker()
        m.ingress()
        m.ingress()
        m.wait_tools(12, n=0)
        m.wait_tools(12, n=1)
        yield m


class Alternate(httpx2.AsyncBaseTransport):
    """Sends each request to the next ingress replica in turn, as a load balancer without affinity would."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.inner = httpx2.AsyncHTTPTransport()
        self.sent: list[int] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self.ports[len(self.sent) % len(self.ports)]
        self.sent.append(port)
        request.url = request.url.copy_with(port=port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_one_session_alternating_between_two_replicas_succeeds_on_every_call(muster: Muster) -> None:
    transport = Alternate(muster.ingress_ports)
    async with (
        httpx2.AsyncClient(transport=transport, timeout=30) as http,
        Client(streamable_http_client(muster.url(0), http_client=http), mode="legacy") as client,
    ):
        tools = await client.list_tools()
        assert len(tools.tools) == 12
        for n in range(20):
            cluster = "alpha" if n % 2 else "beta"
            result = await client.call_tool(f"x_{cluster}_get", {"resourceType": "namespaces", "name": "giantswarm"})
            assert not result.is_error, result
            assert json.loads(result.content[0].text)["resource"]["metadata"]["name"] == "giantswarm"  # type: ignore[union-attr]
    assert set(transport.sent) == set(muster.ingress_ports)
    assert transport.sent.count(muster.ingress_ports[0]) >= 10 and transport.sent.count(muster.ingress_ports[1]) >= 10


async def test_a_slow_upstream_does_not_delay_calls_to_another(muster: Muster) -> None:
    alpha = muster.standins["alpha"]
    alpha.fault(action="delay", tool="cluster_health", seconds=5, count=1)
    finished: list[str] = []
    try:
        async with mcp_client(muster.url(0)) as slow_client, mcp_client(muster.url(1)) as client:

            async def slow() -> None:
                result = await slow_client.call_tool("x_alpha_cluster_health", {})
                assert not result.is_error
                finished.append("slow")

            async def fast(n: int) -> None:
                result = await client.call_tool("x_beta_list", {"resourceType": "pods", "namespace": "giantswarm"})
                assert not result.is_error
                finished.append(f"fast {n}")

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                for _ in range(100):  # the slow call is running at the upstream before the others start
                    if alpha.stats()["running"]:
                        break
                    await anyio.sleep(0.02)
                assert alpha.stats()["running"] == 1
                for n in range(20):
                    tg.start_soon(fast, n)
    finally:
        alpha.clear_faults()
    assert len(finished) == 21
    assert finished[-1] == "slow", finished


async def test_a_new_server_file_reaches_an_open_event_stream_within_two_seconds(muster: Muster) -> None:
    gamma = muster.standin("gamma", register=False)
    session = initialize(muster.url(1))
    headers = {**HEADERS, "Mcp-Session-Id": session}
    received: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", muster.url(1), headers={**headers, "Accept": "text/event-stream"}) as stream,
    ):
        assert stream.status_code == 200
        await asyncio.sleep(0.2)
        started = time.monotonic()
        (muster.servers / "gamma.yaml").write_text(server_yaml("gamma", gamma.url))
        with anyio.fail_after(2):
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    break
        listed = await http.post(
            muster.url(1), headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        )
        elapsed = time.monotonic() - started
    assert received == [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}]
    names = [t["name"] for t in listed.json()["result"]["tools"]]
    assert {"x_gamma_list", "x_gamma_get", "x_alpha_list", "x_beta_list"} <= set(names) and len(names) == 18
    assert elapsed < 2.0
    (muster.servers / "gamma.yaml").unlink()
    muster.wait_tools(12, n=1)
