from mcp.types import Tool

from shared.meta._gojson import marshal
from shared.meta.definitions import META_TOOL_NAMES, META_TOOLS


def test_there_are_the_eleven_meta_tools_of_the_go_muster() -> None:
    assert [t["name"] for t in META_TOOLS] == [
        "list_tools",
        "describe_tool",
        "list_core_tools",
        "filter_tools",
        "call_tool",
        "list_resources",
        "describe_resource",
        "get_resource",
        "list_prompts",
        "describe_prompt",
        "get_prompt",
    ]
    assert len(META_TOOL_NAMES) == 11
    for tool in META_TOOLS:
        Tool.model_validate(tool)


def test_schemas_are_serialised_as_mcp_go_serialises_convert_to_mcp_schema() -> None:
    by_name = {t["name"]: t for t in META_TOOLS}
    assert marshal(by_name["list_tools"]["inputSchema"]) == '{"properties":{},"required":[],"type":"object"}'
    assert marshal(by_name["call_tool"]["inputSchema"]) == (
        '{"properties":{"arguments":{"description":"Arguments to pass to the tool (as JSON object)","type":"object"},'
        '"name":{"description":"Name of the tool to call","type":"string"}},"required":["name"],"type":"object"}'
    )
    filter_schema = by_name["filter_tools"]["inputSchema"]
    assert list(filter_schema["properties"]) == sorted(filter_schema["properties"])
    assert filter_schema["required"] == []
    assert {k: v.get("default") for k, v in filter_schema["properties"].items()} == {
        "case_sensitive": False,
        "description_filter": None,
        "include_schema": False,
        "labels": None,
        "limit": 5,
        "offset": 0,
        "pattern": None,
        "query": None,
    }
    assert by_name["list_core_tools"]["inputSchema"]["properties"]["include_schema"] == {
        "default": True,
        "description": "Whether to include full tool specifications with input schemas (default: true)",
        "type": "boolean",
    }
    assert by_name["get_prompt"]["inputSchema"]["properties"]["arguments"]["description"] == (
        "Arguments to pass to the prompt (as JSON object with string values)"
    )


def test_descriptions_are_the_go_muster_s_words() -> None:
    by_name = {t["name"]: t["description"] for t in META_TOOLS}
    assert by_name["call_tool"] == "Execute a tool with the given arguments"
    assert by_name["filter_tools"].startswith("Discover tools cheaply: filter by name pattern, description, or labels")
    assert by_name["filter_tools"].endswith("use describe_tool for the authoritative detail of a chosen tool.")
