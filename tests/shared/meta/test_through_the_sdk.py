"""The meta-tools served by the official SDK's server and called by its client, with an upstream behind call_tool
that is an SDK server too: every result survives the SDK's parsing, and an image arrives byte-exact."""

import base64
import json
from collections.abc import Mapping
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.server import Server, ServerRequestContext

from shared.mcpserver import Family
from shared.meta.catalog import MetaCatalog, ToolCatalog
from shared.meta.definitions import META_TOOLS
from shared.meta.errors import CallFailed
from shared.meta.families import assemble, resolve
from shared.meta.handlers import run

PIXELS = bytes(range(256)) * 64  # 16 KiB that would not survive a lossy re-encoding
PNG = base64.b64encode(PIXELS).decode()
PANEL = {
    "name": "render_panel",
    "description": "Render a dashboard panel as a PNG image",
    "inputSchema": {"type": "object", "properties": {"panel": {"type": "integer"}}, "required": ["panel"]},
}


def upstream(cluster: str) -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool.model_validate(PANEL)])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult.model_validate(
            {
                "content": [
                    {"type": "text", "text": f"panel {params.arguments['panel']} of {cluster}"},  # type: ignore[index]
                    {"type": "image", "data": PNG, "mimeType": "image/png", "_meta": {"cluster": cluster}},
                ],
                "structuredContent": {"cluster": cluster},
                "_meta": {"ui": {"resourceUri": f"ui://{cluster}/panel"}},
            }
        )

    return Server(cluster, on_list_tools=list_tools, on_call_tool=call_tool)


class Backend:
    def __init__(self, clients: Mapping[str, Client], routes: Any) -> None:
        self.clients = clients
        self.routes = routes

    async def call_tool(self, name: str, arguments: dict[str, Any], meta: Mapping[str, Any] | None) -> dict[str, Any]:
        route, forwarded = resolve(self.routes, name, arguments)
        result = await self.clients[route.server].call_tool(route.name, forwarded)
        return result.model_dump(by_alias=True, exclude_none=True, mode="json")

    async def read_resource(self, uri: str) -> dict[str, Any]:
        raise CallFailed(f"unknown resource: {uri}")

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": {"type": "text", "text": f"triage {arguments['namespace']}"}}]}


def meta_server(catalog: MetaCatalog, backend: Backend) -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool.model_validate(t) for t in META_TOOLS])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        result = await run(params.name, params.arguments, catalog, backend)
        return types.CallToolResult.model_validate(result)

    return Server("muster", on_list_tools=list_tools, on_call_tool=call_tool)


def text(result: types.CallToolResult, index: int = 0) -> str:
    item = result.content[index]
    assert isinstance(item, types.TextContent)
    return item.text


@pytest.mark.anyio
async def test_every_meta_tool_answers_through_the_official_client_and_images_arrive_byte_exact() -> None:
    family = Family(name="grafana", instance_arg="management_cluster")
    entries = [
        _Entry("grafana-gazelle", "gazelle", family, [PANEL]),
        _Entry("grafana-graveler", "graveler", family, [PANEL]),
    ]
    exposure = assemble(entries)
    resources = [{"uri": "docs://runbook", "name": "runbook"}]
    prompts = [{"name": "x_triage", "description": "Triage", "arguments": [{"name": "namespace", "required": True}]}]
    catalog = MetaCatalog(ToolCatalog(exposure.tools), resources, prompts)
    async with Client(upstream("gazelle")) as gazelle, Client(upstream("graveler")) as graveler:
        backend = Backend({"grafana-gazelle": gazelle, "grafana-graveler": graveler}, exposure.routes)
        async with Client(meta_server(catalog, backend)) as client:

            async def ask(name: str, args: dict[str, Any]) -> Any:
                return json.loads(text(await client.call_tool(name, args)))

            listed = await client.list_tools()
            assert [t.name for t in listed.tools] == [t["name"] for t in META_TOOLS]

            assert await ask("list_tools", {}) == {
                "tools": [
                    {
                        "name": "x_grafana_render_panel",
                        "description": "Render a dashboard panel as a PNG image "
                        "(available on servers: grafana-gazelle, grafana-graveler)",
                    }
                ]
            }
            found = await ask("filter_tools", {"query": "panel image"})
            assert found["tools"][0]["name"] == "x_grafana_render_panel" and found["tools"][0]["score"] > 0
            selector = (await ask("describe_tool", {"name": "x_grafana_render_panel"}))["inputSchema"]["properties"]
            assert selector["management_cluster"]["enum"] == ["grafana-gazelle", "grafana-graveler"]
            core = await ask("list_core_tools", {})
            assert core["total"] == 0 and core["total_tools"] == 1

            arguments = {"panel": 4, "management_cluster": "grafana-graveler"}
            called = await client.call_tool("call_tool", {"name": "x_grafana_render_panel", "arguments": arguments})
            assert not called.is_error
            envelope = json.loads(text(called))
            assert envelope["content"] == [
                {"text": "panel 4 of graveler", "type": "text"},
                {"_meta": {"cluster": "graveler"}, "dataSize": len(PNG), "mimeType": "image/png", "type": "image"},
            ]
            image = called.content[1]
            assert isinstance(image, types.ImageContent) and image.mime_type == "image/png"
            assert base64.b64decode(image.data) == PIXELS
            assert called.structured_content == {"cluster": "graveler"}
            assert called.meta is not None and called.meta["ui"] == {"resourceUri": "ui://graveler/panel"}

            unrouted = await client.call_tool("call_tool", {"name": "x_grafana_render_panel", "arguments": {}})
            reason = json.loads(text(unrouted))["content"][0]["text"]
            assert unrouted.is_error and reason.endswith('the "management_cluster" parameter is required')
            refusals: list[tuple[str, dict[str, Any], str]] = [
                ("filter_tools", {"pattern": "x_["}, 'Invalid pattern "x_[": syntax error in pattern'),
                ("filter_tools", {"limit": 0}, "limit must be at least 1"),
                ("describe_tool", {"name": "x_nope"}, "Tool not found: x_nope"),
                ("get_resource", {"uri": "docs://nope"}, "Resource retrieval failed: unknown resource: docs://nope"),
            ]
            for name, args, message in refusals:
                refused = await client.call_tool(name, args)
                assert refused.is_error and text(refused) == message

            assert (await ask("list_resources", {}))[0]["uri"] == "docs://runbook"
            assert (await ask("describe_resource", {"uri": "docs://runbook"}))["name"] == "runbook"
            assert await ask("list_prompts", {}) == [{"name": "x_triage", "description": "Triage"}]
            assert (await ask("describe_prompt", {"name": "x_triage"}))["arguments"][0]["required"] is True
            prompt = await ask("get_prompt", {"name": "x_triage", "arguments": {"namespace": "org-acme"}})
            assert prompt == [{"role": "user", "content": {"text": "triage org-acme", "type": "text"}}]


class _Entry:
    def __init__(self, name: str, prefix: str, family: Family, tools: list[dict[str, Any]]) -> None:
        self.name, self.prefix, self.family, self.tools = name, prefix, family, tools
        self.state: Any = "Connected"
        self.exposed = True
        self.prompts: list[dict[str, Any]] = []
        self.safe_tools: list[str] | None = None
