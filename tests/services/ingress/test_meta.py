"""Exposure mode `meta` against a real stack: every meta-tool called through the official client, each answer
parsed and checked against the shape docs/meta-tools.md documents, errors included; call_tool's inner call goes
through the queue, so the upstream's progress, logs, requests and binary content reach the agent through it."""

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from shared.meta import core
from shared.meta.definitions import META_TOOLS
from tests.conftest import Muster, make_muster, mcp_client
from tests.fixtures.conformance_server import IMAGE, RESOURCES

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

FAMILY = {"name": "mc", "instanceArg": "management_cluster"}


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.standin("gazelle", family=FAMILY, toolPrefix="gazelle", description="mcp-kubernetes on gazelle")
        m.standin("graveler", family=FAMILY, toolPrefix="graveler", headers={"Authorization": "Bearer s3cret"})
        m.fixture_server()
        m.discovery()
        m.worker()
        m.ingress(MUSTER_EXPOSE="meta")
        m.ingress()  # direct mode, for comparison
        m.wait_tools({"x_mc_list", "x_fixture_test_image_content"}, n=1)
        yield m


def text(result: types.CallToolResult, index: int = 0) -> str:
    item = result.content[index]
    assert isinstance(item, types.TextContent), item
    return item.text


def parsed(result: types.CallToolResult) -> Any:
    assert not result.is_error, text(result)
    return json.loads(text(result))


def refused(result: types.CallToolResult) -> str:
    assert result.is_error and len(result.content) == 1
    return text(result)


async def direct_tools(muster: Muster) -> dict[str, dict[str, Any]]:
    async with mcp_client(muster.url(1)) as client:
        return {t.name: t.model_dump(by_alias=True, exclude_none=True) for t in (await client.list_tools()).tools}


async def test_tools_list_is_exactly_the_eleven_meta_tools(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:
        listed = [t.model_dump(by_alias=True, exclude_none=True) for t in (await client.list_tools()).tools]
    assert listed == META_TOOLS
    assert len(listed) == 11


async def test_list_tools_and_describe_tool_show_the_catalog_of_direct_mode(muster: Muster) -> None:
    direct = await direct_tools(muster)
    async with mcp_client(muster.url(0)) as client:
        listing = parsed(await client.call_tool("list_tools", {}))
        assert set(listing) == {"tools"}  # no servers_requiring_auth without auth
        assert all(set(t) == {"name", "description"} for t in listing["tools"])
        names = [t["name"] for t in listing["tools"]]
        assert names == [*direct, *(t["name"] for t in core.CORE_TOOLS)]
        detail = parsed(await client.call_tool("describe_tool", {"name": "x_mc_list"}))
        assert list(detail) == ["description", "inputSchema", "name"]
        assert detail["inputSchema"] == direct["x_mc_list"]["inputSchema"]
        assert detail["inputSchema"]["properties"]["management_cluster"]["enum"] == ["gazelle", "graveler"]
        assert detail["description"].endswith(" (available on servers: gazelle, graveler)")
        assert refused(await client.call_tool("describe_tool", {"name": "x_nope"})) == "Tool not found: x_nope"
        assert refused(await client.call_tool("describe_tool", {})) == "name argument is required"


async def test_filter_tools_ranks_pages_and_refuses_bad_arguments(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:
        logs = parsed(await client.call_tool("filter_tools", {"query": "pod logs"}))
        assert [t["name"] for t in logs["tools"]] == ["x_mc_logs"] and logs["total"] == 1
        ranked = parsed(await client.call_tool("filter_tools", {"query": "image content", "limit": 2}))
        assert list(ranked) == ["filters", "total_tools", "filtered_count", "total", "truncated", "tools"]
        assert ranked["filters"]["query"] == "image content" and ranked["filters"]["limit"] == 2
        assert ranked["tools"][0]["name"] == "x_fixture_test_image_content"
        assert [set(t) for t in ranked["tools"]] == [{"name", "summary", "score"}] * 2
        assert ranked["tools"][0]["score"] > ranked["tools"][1]["score"] > 0
        assert ranked["filtered_count"] == 2 and ranked["total"] > 2 and ranked["truncated"] is True
        following = parsed(await client.call_tool("filter_tools", {"query": "image content", "limit": 2, "offset": 2}))
        assert following["tools"][0]["score"] <= ranked["tools"][1]["score"]
        globbed = parsed(await client.call_tool("filter_tools", {"pattern": "X_MC_*", "include_schema": True}))
        assert {t["name"] for t in globbed["tools"]} <= {n for n in await direct_tools(muster) if n.startswith("x_mc_")}
        assert all("inputSchema" in t and "description" in t for t in globbed["tools"])
        described = parsed(await client.call_tool("filter_tools", {"description_filter": "IMAGE CONTENT"}))
        assert [t["name"] for t in described["tools"]] == ["x_fixture_test_image_content"]
        nothing = parsed(await client.call_tool("filter_tools", {"pattern": "x_nothing_*"}))
        assert nothing["tools"] == [] and nothing["total"] == 0 and nothing["truncated"] is False
        assert refused(await client.call_tool("filter_tools", {"limit": 0})) == "limit must be at least 1"
        assert refused(await client.call_tool("filter_tools", {"limit": "5"})) == "limit must be a number"
        assert refused(await client.call_tool("filter_tools", {"offset": -1})) == "offset must be at least 0"
        invalid = refused(await client.call_tool("filter_tools", {"pattern": "x_[mc"}))
        assert invalid == 'Invalid pattern "x_[mc": syntax error in pattern'


async def test_list_core_tools_shows_the_four_core_tools_with_schemas(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:
        listing = parsed(await client.call_tool("list_core_tools", {}))
    assert [t["name"] for t in listing["tools"]] == [t["name"] for t in core.CORE_TOOLS]
    assert [t["inputSchema"] for t in listing["tools"]] == [t["inputSchema"] for t in core.CORE_TOOLS]
    assert listing["total"] == 4 and listing["truncated"] is False


async def test_call_tool_runs_a_family_tool_at_the_chosen_cluster(muster: Muster) -> None:
    graveler, gazelle = muster.standins["graveler"], muster.standins["gazelle"]
    before = graveler.stats()["tools"].get("list", 0), gazelle.stats()["tools"].get("list", 0)
    async with mcp_client(muster.url(0)) as client:
        arguments = {"management_cluster": "graveler", "resourceType": "pods", "namespace": "org-acme"}
        result = await client.call_tool("call_tool", {"name": "x_mc_list", "arguments": arguments})
    envelope = parsed(result)
    assert list(envelope) == ["isError", "content"] and envelope["isError"] is False
    assert [item["type"] for item in envelope["content"]] == ["text"]
    assert "crash" in envelope["content"][0]["text"].lower()  # graveler's org-acme has a crash-looping pod
    assert graveler.stats()["tools"]["list"] == before[0] + 1
    assert gazelle.stats()["tools"].get("list", 0) == before[1]


async def test_call_tool_says_why_a_call_goes_nowhere_inside_its_envelope(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:

        async def failed(name: str, arguments: Any = None) -> str:
            result = await client.call_tool("call_tool", {"name": name, "arguments": arguments or {}})
            assert result.is_error
            envelope = json.loads(text(result))
            assert envelope["isError"] is True and len(envelope["content"]) == 1
            message: str = envelope["content"][0]["text"]
            return message

        assert await failed("x_nope") == "Tool execution failed: tool not found: x_nope"
        assert await failed("x_mc_list", {"resourceType": "pods"}) == (
            "Tool execution failed: tool x_mc_list is provided by a family on servers gazelle, graveler; "
            'the "management_cluster" parameter is required'
        )
        assert await failed("x_mc_list", {"management_cluster": "geodude"}) == (
            'Tool execution failed: tool x_mc_list is not available on server "geodude" (available: gazelle, graveler)'
        )
        bad = await client.call_tool("call_tool", {"name": "x_mc_list", "arguments": "pods"})
        assert refused(bad) == "arguments must be a JSON object"
        upstream_error = json.loads(
            text(await client.call_tool("call_tool", {"name": "x_fixture_test_error_handling"}))
        )
        assert upstream_error["isError"] is True
        assert upstream_error["content"][0]["text"] == "This tool intentionally returns an error for testing"


async def test_an_image_arrives_byte_exact_through_call_tool(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:
        result = await client.call_tool("call_tool", {"name": "x_fixture_test_image_content"})
        mixed = await client.call_tool("call_tool", {"name": "x_fixture_test_multiple_content_types"})
    envelope = parsed(result)
    assert envelope["content"] == [{"dataSize": len(IMAGE), "mimeType": "image/png", "type": "image"}]
    image = result.content[1]
    assert isinstance(image, types.ImageContent) and image.mime_type == "image/png"
    assert image.data == IMAGE and base64.b64decode(image.data) == base64.b64decode(IMAGE)
    kinds = [item["type"] for item in parsed(mixed)["content"]]
    assert kinds == ["text", "image", "resource"]
    assert [type(item) for item in mixed.content] == [types.TextContent, types.ImageContent]
    assert mixed.content[1].data == IMAGE


async def test_call_tool_keeps_structured_content_and_meta(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:
        result = await client.call_tool("call_tool", {"name": "x_fixture_test_structured"})
    envelope = parsed(result)
    assert envelope["structuredContent"] == {"a": 1, "nested": {"b": [1, 2.5, "x", None, True]}}
    assert envelope["_meta"] == {"io.example/trace": "abc"}
    assert result.structured_content == envelope["structuredContent"] and result.meta == envelope["_meta"]


async def test_progress_logs_and_sampling_of_the_inner_call_reach_the_agent(muster: Muster) -> None:
    progress: list[tuple[float, float | None]] = []
    logs: list[Any] = []
    asked: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params.messages[0].content.text)  # type: ignore[union-attr]
        return types.CreateMessageResult(
            role="assistant", model="m", content=types.TextContent(type="text", text="Paris")
        )

    async with mcp_client(muster.url(0), mode="legacy", logging_callback=on_log, sampling_callback=sample) as client:
        result = await client.call_tool(
            "call_tool", {"name": "x_fixture_test_tool_with_progress"}, progress_callback=on_progress
        )
        assert not result.is_error
        await client.call_tool("call_tool", {"name": "x_fixture_test_tool_with_logging"})
        sampled = parsed(
            await client.call_tool(
                "call_tool", {"name": "x_fixture_test_sampling", "arguments": {"prompt": "Capital?"}}
            )
        )
    assert progress == [(0, 100), (50, 100), (100, 100)]
    assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]
    assert asked == ["Capital?"] and sampled["content"][0]["text"] == "LLM response: Paris"


async def test_resources_through_the_meta_tools_and_auth_status(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:
        listing = parsed(await client.call_tool("list_resources", {}))
        assert [r["uri"] for r in listing] == ["auth://status", *(r["uri"] for r in RESOURCES)]
        assert all(set(r) <= {"uri", "name", "description", "mimeType"} and r["description"] for r in listing)
        described = parsed(await client.call_tool("describe_resource", {"uri": "test://static-binary"}))
        assert list(described) == ["description", "mimeType", "name", "uri"] and described["mimeType"] == "image/png"
        assert (
            refused(await client.call_tool("describe_resource", {"uri": "test://x"})) == "Resource not found: test://x"
        )
        plain = await client.call_tool("get_resource", {"uri": "test://static-text"})
        assert text(plain) == "This is the content of the static text resource."
        binary = await client.call_tool("get_resource", {"uri": "test://static-binary"})
        assert re.fullmatch(r"\[Binary data: \d+ bytes\]", text(binary))
        blob = binary.content[1]
        assert isinstance(blob, types.EmbeddedResource) and blob.resource.blob == IMAGE  # type: ignore[union-attr]
        missing = refused(await client.call_tool("get_resource", {"uri": "test://nowhere"}))
        assert missing.startswith("Resource retrieval failed: ")
        status = json.loads(text(await client.call_tool("get_resource", {"uri": "auth://status"})))
        native = await client.read_resource("auth://status")
    assert status == {
        "servers": [
            {"name": "fixture", "status": "connected"},
            {"name": "gazelle", "status": "connected"},
            {"name": "graveler", "status": "connected"},
        ]
    }
    item = native.contents[0]
    assert isinstance(item, types.TextResourceContents) and item.mime_type == "application/json"
    assert json.loads(item.text) == status


async def test_prompts_through_the_meta_tools(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:
        listing = parsed(await client.call_tool("list_prompts", {}))
        assert [set(p) for p in listing] == [{"name", "description"}] * len(listing)
        name = "x_fixture_test_prompt_with_arguments"
        assert name in [p["name"] for p in listing]
        described = parsed(await client.call_tool("describe_prompt", {"name": name}))
        assert list(described) == ["arguments", "description", "name"]
        assert described["arguments"][0] == {"description": "First test argument", "name": "arg1", "required": True}
        got = parsed(await client.call_tool("get_prompt", {"name": name, "arguments": {"arg1": "a", "arg2": 2}}))
        assert got == [
            {"role": "user", "content": {"text": "Prompt with arguments: arg1='a', arg2='2'", "type": "text"}}
        ]
        image = await client.call_tool("get_prompt", {"name": "x_fixture_test_prompt_with_image"})
        assert parsed(image)[0]["content"] == {"dataSize": len(IMAGE), "mimeType": "image/png", "type": "image"}
        assert image.content[1].data == IMAGE
        assert refused(await client.call_tool("describe_prompt", {"name": "x"})) == "Prompt not found: x"
        failed = refused(await client.call_tool("get_prompt", {"name": "x_nope"}))
        assert failed == "Prompt retrieval failed: prompt not found: x_nope"


async def test_core_tools_show_servers_redacted_and_change_nothing_without_a_session(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:

        async def inner(name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
            envelope = json.loads(text(await client.call_tool("call_tool", {"name": name, "arguments": arguments})))
            return envelope["isError"], envelope["content"][0]["text"]

        error, listing = await inner("core_mcpserver_list", {})
        servers = json.loads(listing)
        assert not error and servers["mode"] == "filesystem" and servers["total"] == 3
        assert [s["name"] for s in servers["mcpServers"]] == ["fixture", "gazelle", "graveler"]
        graveler = servers["mcpServers"][2]
        assert graveler["headers"] == {"Authorization": "[redacted]"} and "s3cret" not in listing
        assert graveler["family"] == FAMILY and graveler["state"] == "Connected"
        error, got = await inner("core_mcpserver_get", {"name": "gazelle"})
        assert not error and json.loads(got)["description"] == "mcp-kubernetes on gazelle"
        assert await inner("core_mcpserver_get", {"name": "x"}) == (
            True,
            "Failed to get MCP server: MCP server x not found",
        )
        assert await inner("core_auth_login", {"server": "gazelle"}) == (True, core.MISSING_SESSION)
        assert await inner("core_auth_logout", {"server": "gazelle"}) == (True, core.MISSING_SESSION)
        assert await inner("core_auth_login", {}) == (True, core.MISSING_SERVER)


async def test_a_tools_call_of_a_name_that_is_no_tool_is_an_invalid_params_error(muster: Muster) -> None:
    async with mcp_client(muster.url(0)) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("x_nope", {})
        assert raised.value.error.code == -32602
        # the aggregated names still answer when called directly, as after describe_tool an agent may
        arguments = {"management_cluster": "gazelle", "resourceType": "namespaces"}
        assert not (await client.call_tool("x_mc_list", arguments)).is_error


async def test_the_per_request_protocol_gets_the_same_answers(muster: Muster) -> None:
    async with mcp_client(muster.url(0), mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        assert len((await client.list_tools()).tools) == 11
        arguments = {"management_cluster": "gazelle", "resourceType": "namespaces"}
        envelope = parsed(await client.call_tool("call_tool", {"name": "x_mc_list", "arguments": arguments}))
        assert envelope["isError"] is False
