"""A 2026-07-28 agent asked for sampling, elicitation or roots in the middle of a call: the upstream (handshake
era, the conformance fixtures) sends its request; the agent gets an input_required result, answers by sending
its request again, and that answer reaches the upstream request that still waits. The test is the official
client in its default mode, behind a load balancer that sends every request to the next replica in turn."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import HEADERS, Muster, make_muster
from tests.test_pipeline import Alternate

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.fixture_server()
        m.discovery(prefix_mode="never")
        m.worker()
        m.ingress()
        m.ingress()
        m.wait_tools({"test_sampling", "test_elicitation", "test_roots"}, n=0)
        m.wait_tools({"test_sampling", "test_elicitation", "test_roots"}, n=1)
        yield m


async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    text = params.messages[0].content.text  # type: ignore[union-attr]
    return types.CreateMessageResult(
        role="assistant", model="test-model", content=types.TextContent(type="text", text=f"{text} Paris")
    )


async def elicit(context: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"response": "yes"})


async def roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work", name="work")])


async def test_the_official_client_in_its_default_mode_answers_sampling_elicitation_and_roots(muster: Muster) -> None:
    transport = Alternate(muster.ingress_ports)
    async with (
        httpx2.AsyncClient(transport=transport, timeout=30) as http,
        Client(
            streamable_http_client(muster.url(0), http_client=http),
            sampling_callback=sample,
            elicitation_callback=elicit,
            list_roots_callback=roots,
        ) as client,
    ):
        assert client.protocol_version == "2026-07-28"
        with anyio.fail_after(20):
            sampled = await client.call_tool("test_sampling", {"prompt": "Capital of France?"})
            elicited = await client.call_tool("test_elicitation", {"message": "Proceed?"})
            rooted = await client.call_tool("test_roots", {})
    assert sampled.content[0].text == "LLM response: Capital of France? Paris"  # type: ignore[union-attr]
    assert elicited.content[0].text == 'User response: action=accept, content={"response":"yes"}'  # type: ignore[union-attr]
    assert json.loads(rooted.content[0].text) == ["file:///work"]  # type: ignore[union-attr]
    assert set(transport.sent) == set(muster.ingress_ports)  # the retries went to both replicas


async def test_an_agent_that_did_not_declare_the_capability_is_not_asked(muster: Muster) -> None:
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        Client(streamable_http_client(muster.url(0), http_client=http)) as client,
    ):
        with anyio.fail_after(20):
            result = await client.call_tool("test_sampling", {"prompt": "x"})
    assert "the client did not declare the sampling capability" in result.content[0].text  # type: ignore[union-attr]


def test_a_request_state_muster_did_not_give_is_invalid_params(muster: Muster) -> None:
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"sampling": {}},
    }
    headers = {**HEADERS, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "test_sampling"}
    for state in ("i" + "0" * 24 + ".2", "forged", "p" + "1" * 24 + ".2"):
        params = {
            "name": "test_sampling",
            "arguments": {},
            "requestState": state,
            "inputResponses": {},
            "_meta": envelope,
        }
        body = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params}
        response = httpx.post(muster.url(0), headers=headers, json=body, timeout=10)
        assert response.json()["error"] == {
            "code": -32602,
            "message": "Invalid params: requestState is not one muster gave for this request, or expired",
        }
