"""Every meta-tool through `run`, its text parsed and checked against the Go muster's documented shape."""

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest
from mcp.types import CallToolResult

from shared.meta.catalog import MetaCatalog, ToolCatalog
from shared.meta.errors import CallFailed, InstanceRequired, ToolNotFound
from shared.meta.handlers import run

PNG = base64.b64encode(bytes(range(256)) * 4).decode()
WAV = base64.b64encode(b"RIFF\x00\x01\x02\xff" * 50).decode()

TOOLS = [
    {
        "name": "x_gazelle_list",
        "description": "List Kubernetes resources\nwith selectors",
        "inputSchema": {
            "type": "object",
            "properties": {"resourceType": {"type": "string"}},
            "required": ["resourceType"],
        },
    },
    {
        "name": "x_grafana_getPanelImage",
        "description": "Render a dashboard panel as a PNG image",
        "inputSchema": {"type": "object"},
    },
    {
        "name": "core_auth_login",
        "description": "Authenticate to an OAuth-protected MCP server",
        "inputSchema": {"type": "object"},
    },
]
RESOURCES = [
    {"uri": "k8s://gazelle/pods", "name": "pods", "mimeType": "application/json"},
    {"uri": "docs://runbook", "name": "runbook", "description": "The runbook"},
]
PROMPTS = [
    {
        "name": "x_gazelle_triage",
        "description": "Triage a namespace",
        "arguments": [{"name": "namespace", "description": "Namespace", "required": True}, {"name": "depth"}],
    }
]


class Backend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], Mapping[str, Any] | None]] = []
        self.prompt_args: dict[str, str] = {}

    async def call_tool(self, name: str, arguments: dict[str, Any], meta: Mapping[str, Any] | None) -> dict[str, Any]:
        self.calls.append((name, arguments, meta))
        if name == "x_gazelle_list":
            return {"content": [{"type": "text", "text": "pods: 3"}], "structuredContent": {"count": 3}}
        if name == "x_grafana_getPanelImage":
            return {
                "content": [
                    {"type": "text", "text": "panel 4", "annotations": {"audience": ["user"]}},
                    {"type": "image", "data": PNG, "mimeType": "image/png", "_meta": {"width": 800}},
                    {"type": "audio", "data": WAV, "mimeType": "audio/wav"},
                    {"type": "resource", "resource": {"uri": "grafana://p/4", "blob": PNG, "mimeType": "image/png"}},
                ],
                "_meta": {"ui": {"resourceUri": "ui://panel"}},
            }
        if name == "x_fails":
            return {"content": [{"type": "text", "text": "denied"}], "isError": True}
        if name == "x_family":
            raise InstanceRequired(name, "management_cluster", ["gazelle", "graveler"])
        if name == "x_down":
            raise CallFailed("server k8s-gazelle cannot be reached")
        raise ToolNotFound(name)

    async def read_resource(self, uri: str) -> dict[str, Any]:
        if uri == "k8s://gazelle/pods":
            return {
                "contents": [
                    {"uri": uri, "text": "a"},
                    {"uri": uri, "blob": PNG, "mimeType": "image/png"},
                    {"uri": uri, "text": "b"},
                ]
            }
        raise CallFailed(f"unknown resource: {uri}")

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> dict[str, Any]:
        if name != "x_gazelle_triage":
            raise CallFailed(f"failed to resolve prompt name: unknown name: {name}")
        self.prompt_args = arguments
        return {
            "messages": [
                {"role": "user", "content": {"type": "text", "text": f"Triage {arguments.get('namespace')}"}},
                {"role": "assistant", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
                {"role": "user", "content": {"type": "resource", "resource": {"uri": "docs://runbook", "text": "rb"}}},
            ]
        }


def catalog(**kw: Any) -> MetaCatalog:
    return MetaCatalog(ToolCatalog(TOOLS), RESOURCES, PROMPTS, **kw)


async def call(
    name: str, args: Any = None, cat: MetaCatalog | None = None, backend: Backend | None = None
) -> dict[str, Any]:
    result = await run(name, args, cat or catalog(), backend or Backend())
    CallToolResult.model_validate(result)  # every answer is a valid MCP tool result
    return result


def text(result: dict[str, Any]) -> str:
    first = result["content"][0]
    assert first["type"] == "text"
    return str(first["text"])


def error(result: dict[str, Any]) -> str:
    assert result.get("isError") is True
    return text(result)


@pytest.mark.anyio
async def test_list_tools_lists_name_and_description_and_the_servers_that_need_a_login() -> None:
    body = json.loads(text(await call("list_tools")))
    assert body == {"tools": [{"name": t["name"], "description": t["description"]} for t in TOOLS]}
    body = json.loads(text(await call("list_tools", {}, catalog(servers_requiring_auth=["github"]))))
    assert body["servers_requiring_auth"] == [
        {"name": "github", "status": "auth_required", "auth_tool": "core_auth_login"}
    ]


@pytest.mark.anyio
async def test_describe_tool_shows_the_full_description_and_schema_and_refuses_unknown_names() -> None:
    result = await call("describe_tool", {"name": "x_gazelle_list"})
    assert list(json.loads(text(result))) == ["description", "inputSchema", "name"]
    assert json.loads(text(result))["inputSchema"] == TOOLS[0]["inputSchema"]
    assert text(result).startswith('{\n  "description": "List Kubernetes resources\\nwith selectors",')
    assert error(await call("describe_tool", {"name": "x_nope"})) == "Tool not found: x_nope"
    assert error(await call("describe_tool", {})) == "name argument is required"
    assert error(await call("describe_tool", {"name": 3})) == "name argument is required"


@pytest.mark.anyio
async def test_describe_tool_only_sees_the_tools_the_session_may_see() -> None:
    assert (
        error(await call("describe_tool", {"name": "x_gazelle_list"}, catalog(visible=[1, 2])))
        == "Tool not found: x_gazelle_list"
    )


@pytest.mark.anyio
async def test_filter_tools_answers_a_summarised_page() -> None:
    body = json.loads(text(await call("filter_tools", {"pattern": "x_*", "limit": 1})))
    assert body == {
        "filters": {"pattern": "x_*", "case_sensitive": False, "include_schema": False, "limit": 1, "offset": 0},
        "total_tools": 3,
        "filtered_count": 1,
        "total": 2,
        "truncated": True,
        "tools": [{"name": "x_gazelle_list", "summary": "List Kubernetes resources"}],
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"limit": 0}, "limit must be at least 1"),
        ({"limit": 0.9}, "limit must be at least 1"),
        ({"limit": "5"}, "limit must be a number"),
        ({"limit": None}, "limit must be a number"),
        ({"limit": True}, "limit must be a number"),
        ({"offset": -1}, "offset must be at least 0"),
        ({"offset": "1"}, "offset must be a number"),
        ({"pattern": "x_["}, 'Invalid pattern "x_[": syntax error in pattern'),
        ({"pattern": "[]a]"}, 'Invalid pattern "[]a]": syntax error in pattern'),
    ],
)
async def test_filter_tools_refuses_bad_limits_offsets_and_patterns(args: dict[str, Any], message: str) -> None:
    assert error(await call("filter_tools", args)) == message


@pytest.mark.anyio
async def test_filter_tools_on_an_empty_catalogue_says_so() -> None:
    empty = MetaCatalog(ToolCatalog([]))
    result = await call("filter_tools", {"pattern": "["}, empty)
    assert text(result) == "No tools available to filter" and "isError" not in result


@pytest.mark.anyio
async def test_list_core_tools_lists_core_tools_with_schemas_and_no_limit() -> None:
    body = json.loads(text(await call("list_core_tools")))
    assert body["filters"] == {
        "pattern": "core*",
        "case_sensitive": False,
        "include_schema": True,
        "limit": 0,
        "offset": 0,
    }
    assert body["tools"] == [
        {"name": "core_auth_login", "description": TOOLS[2]["description"], "inputSchema": TOOLS[2]["inputSchema"]}
    ]
    body = json.loads(text(await call("list_core_tools", {"include_schema": False})))
    assert "inputSchema" not in body["tools"][0] and body["filters"]["include_schema"] is False


@pytest.mark.anyio
async def test_call_tool_wraps_the_result_in_the_go_envelope() -> None:
    backend = Backend()
    result = await call("call_tool", {"name": "x_gazelle_list", "arguments": {"resourceType": "pods"}}, backend=backend)
    assert json.loads(text(result)) == {
        "isError": False,
        "content": [{"text": "pods: 3", "type": "text"}],
        "structuredContent": {"count": 3},
    }
    assert (
        text(result) == '{"isError":false,"content":[{"text":"pods: 3","type":"text"}],"structuredContent":{"count":3}}'
    )
    assert result["structuredContent"] == {"count": 3} and "isError" not in result
    assert backend.calls == [("x_gazelle_list", {"resourceType": "pods"}, None)]


@pytest.mark.anyio
async def test_call_tool_keeps_image_and_audio_bytes_and_meta() -> None:
    result = await call("call_tool", {"name": "x_grafana_getPanelImage"})
    envelope = json.loads(text(result))
    assert envelope["content"] == [
        {"annotations": {"audience": ["user"]}, "text": "panel 4", "type": "text"},
        {"_meta": {"width": 800}, "dataSize": len(PNG), "mimeType": "image/png", "type": "image"},
        {"dataSize": len(WAV), "mimeType": "audio/wav", "type": "audio"},
        {"type": "resource", "resource": {"uri": "grafana://p/4", "blob": PNG, "mimeType": "image/png"}},
    ]
    assert envelope["_meta"] == result["_meta"] == {"ui": {"resourceUri": "ui://panel"}}
    image, audio = result["content"][1:]
    assert image == {"type": "image", "data": PNG, "mimeType": "image/png", "_meta": {"width": 800}}
    assert base64.b64decode(image["data"]) == bytes(range(256)) * 4
    assert base64.b64decode(audio["data"]) == b"RIFF\x00\x01\x02\xff" * 50


@pytest.mark.anyio
async def test_call_tool_mirrors_the_upstream_s_error_and_reports_routing_failures_in_the_envelope() -> None:
    result = await call("call_tool", {"name": "x_fails"})
    assert result["isError"] is True and json.loads(text(result))["isError"] is True
    for name, message in [
        ("x_unknown", "Tool execution failed: tool not found: x_unknown"),
        ("x_down", "Tool execution failed: server k8s-gazelle cannot be reached"),
        (
            "x_family",
            "Tool execution failed: tool x_family is provided by a family on servers gazelle, graveler; "
            'the "management_cluster" parameter is required',
        ),
    ]:
        result = await call("call_tool", {"name": name})
        assert result["isError"] is True
        assert json.loads(text(result)) == {"isError": True, "content": [{"text": message, "type": "text"}]}


@pytest.mark.anyio
async def test_call_tool_refuses_a_missing_name_and_arguments_that_are_not_an_object() -> None:
    assert error(await call("call_tool", {})) == "name argument is required"
    assert (
        error(await call("call_tool", {"name": "x_gazelle_list", "arguments": [1]}))
        == "arguments must be a JSON object"
    )


@pytest.mark.anyio
async def test_call_tool_passes_the_callers_meta_to_the_inner_call() -> None:
    backend = Backend()
    await run("call_tool", {"name": "x_gazelle_list"}, catalog(), backend, {"progressToken": 7})
    assert backend.calls == [("x_gazelle_list", {}, {"progressToken": 7})]


@pytest.mark.anyio
async def test_list_resources_falls_back_to_the_name_for_a_missing_description() -> None:
    body = json.loads(text(await call("list_resources")))
    assert body == [
        {"uri": "k8s://gazelle/pods", "name": "pods", "description": "pods", "mimeType": "application/json"},
        {"uri": "docs://runbook", "name": "runbook", "description": "The runbook"},
    ]
    assert text(await call("list_resources", cat=MetaCatalog(ToolCatalog(TOOLS)))) == "No resources available"


@pytest.mark.anyio
async def test_describe_resource_shows_every_field_sorted_and_refuses_unknown_uris() -> None:
    body = json.loads(text(await call("describe_resource", {"uri": "docs://runbook"})))
    assert list(body.items()) == [
        ("description", "The runbook"),
        ("mimeType", ""),
        ("name", "runbook"),
        ("uri", "docs://runbook"),
    ]
    assert error(await call("describe_resource", {"uri": "docs://nope"})) == "Resource not found: docs://nope"
    assert error(await call("describe_resource")) == "uri argument is required"


@pytest.mark.anyio
async def test_get_resource_joins_text_and_describes_blobs_whose_bytes_follow_natively() -> None:
    result = await call("get_resource", {"uri": "k8s://gazelle/pods"})
    assert text(result) == f"a\n[Binary data: {len(PNG)} bytes]\nb"
    assert result["content"][1] == {
        "type": "resource",
        "resource": {"uri": "k8s://gazelle/pods", "blob": PNG, "mimeType": "image/png"},
    }
    assert error(await call("get_resource", {"uri": "x://y"})) == "Resource retrieval failed: unknown resource: x://y"
    assert error(await call("get_resource", {})) == "uri argument is required"


@pytest.mark.anyio
async def test_list_and_describe_prompts() -> None:
    assert json.loads(text(await call("list_prompts"))) == [
        {"name": "x_gazelle_triage", "description": "Triage a namespace"}
    ]
    assert text(await call("list_prompts", cat=MetaCatalog(ToolCatalog(TOOLS)))) == "No prompts available"
    body = json.loads(text(await call("describe_prompt", {"name": "x_gazelle_triage"})))
    assert body == {
        "arguments": [
            {"description": "Namespace", "name": "namespace", "required": True},
            {"description": "", "name": "depth", "required": False},
        ],
        "description": "Triage a namespace",
        "name": "x_gazelle_triage",
    }
    assert list(body) == ["arguments", "description", "name"]
    assert error(await call("describe_prompt", {"name": "x"})) == "Prompt not found: x"


@pytest.mark.anyio
async def test_get_prompt_stringifies_arguments_and_shows_messages() -> None:
    backend = Backend()
    result = await call(
        "get_prompt", {"name": "x_gazelle_triage", "arguments": {"namespace": "org-acme", "depth": 2}}, backend=backend
    )
    assert backend.prompt_args == {"namespace": "org-acme", "depth": "2"}
    assert json.loads(text(result)) == [
        {"role": "user", "content": {"text": "Triage org-acme", "type": "text"}},
        {"role": "assistant", "content": {"dataSize": len(PNG), "mimeType": "image/png", "type": "image"}},
        {"role": "user", "content": {"resource": {"uri": "docs://runbook", "text": "rb"}, "type": "embeddedResource"}},
    ]
    assert result["content"][1] == {"type": "image", "data": PNG, "mimeType": "image/png"}
    assert error(await call("get_prompt", {"name": "x_nope"})) == (
        "Prompt retrieval failed: failed to resolve prompt name: unknown name: x_nope"
    )
    assert (
        error(await call("get_prompt", {"name": "x_gazelle_triage", "arguments": "ns"}))
        == "arguments must be a JSON object"
    )


@pytest.mark.anyio
async def test_a_name_that_is_not_a_meta_tool_is_not_found() -> None:
    with pytest.raises(ToolNotFound):
        await run("x_gazelle_list", {}, catalog(), Backend())
