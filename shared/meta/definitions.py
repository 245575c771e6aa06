"""The 11 meta-tools as tools/list shows them in meta mode: names, descriptions and input schemas as the Go muster
builds them (`internal/metatools/provider.go` through `convertToMCPSchema`, serialised by mcp-go: properties and
each property's keys sorted, `required` always present)."""

from dataclasses import dataclass
from typing import Any

LIST_TOOLS = "list_tools"
DESCRIBE_TOOL = "describe_tool"
LIST_CORE_TOOLS = "list_core_tools"
FILTER_TOOLS = "filter_tools"
CALL_TOOL = "call_tool"
LIST_RESOURCES = "list_resources"
DESCRIBE_RESOURCE = "describe_resource"
GET_RESOURCE = "get_resource"
LIST_PROMPTS = "list_prompts"
DESCRIBE_PROMPT = "describe_prompt"
GET_PROMPT = "get_prompt"

DEFAULT_FILTER_LIMIT = 5  # the code's default; the Go muster's docs say 25


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    type: str
    description: str
    required: bool = False
    default: Any = None


def tool(name: str, description: str, *args: Arg) -> dict[str, Any]:
    """A tool definition with convertToMCPSchema's input schema."""
    properties: dict[str, Any] = {}
    for arg in sorted(args, key=lambda a: a.name):
        prop: dict[str, Any] = {}
        if arg.default is not None:
            prop["default"] = arg.default
        prop["description"] = arg.description
        prop["type"] = arg.type
        properties[arg.name] = prop
    schema = {"properties": properties, "required": [a.name for a in args if a.required], "type": "object"}
    return {"name": name, "description": description, "inputSchema": schema}


META_TOOLS: list[dict[str, Any]] = [
    tool(LIST_TOOLS, "List all available tools from connected MCP servers"),
    tool(
        DESCRIBE_TOOL,
        "Get detailed information about a specific tool including its input schema",
        Arg("name", "string", "Name of the tool to describe", required=True),
    ),
    tool(
        LIST_CORE_TOOLS,
        "List core muster tools (built-in functionality separate from external MCP servers)",
        Arg(
            "include_schema",
            "boolean",
            "Whether to include full tool specifications with input schemas (default: true)",
            default=True,
        ),
    ),
    tool(
        FILTER_TOOLS,
        "Discover tools cheaply: filter by name pattern, description, or labels, optionally rank by a "
        "natural-language query, and get a bounded, summarised page. Full descriptions and schemas are omitted by "
        "default — use describe_tool for the authoritative detail of a chosen tool.",
        Arg("pattern", "string", "Pattern to match against tool names (supports wildcards like *)"),
        Arg("description_filter", "string", "Filter by description content (case-insensitive substring match)"),
        Arg(
            "query",
            "string",
            "Natural-language query. When set, matching tools are relevance-ranked (lexical BM25 over name + "
            "summary) and returned best-first with a score; non-matching tools are dropped.",
        ),
        Arg(
            "labels",
            "object",
            "Label facets to scope discovery, as key=value pairs. A tool must carry every given label to match "
            '(e.g. {"category": "observability"}).',
        ),
        Arg(
            "case_sensitive",
            "boolean",
            "Whether pattern matching should be case-sensitive (default: false)",
            default=False,
        ),
        Arg(
            "include_schema",
            "boolean",
            "Whether to include full input schemas and full descriptions instead of one-line summaries (default: "
            "false for cheap discovery)",
            default=False,
        ),
        Arg(
            "limit",
            "number",
            "Maximum number of tools to return in this page (default: 5). Increase to page through more matches.",
            default=DEFAULT_FILTER_LIMIT,
        ),
        Arg("offset", "number", "Number of matching tools to skip before this page (default: 0)", default=0),
    ),
    tool(
        CALL_TOOL,
        "Execute a tool with the given arguments",
        Arg("name", "string", "Name of the tool to call", required=True),
        Arg("arguments", "object", "Arguments to pass to the tool (as JSON object)"),
    ),
    tool(LIST_RESOURCES, "List all available resources from connected MCP servers"),
    tool(
        DESCRIBE_RESOURCE,
        "Get detailed information about a specific resource",
        Arg("uri", "string", "URI of the resource to describe", required=True),
    ),
    tool(
        GET_RESOURCE,
        "Retrieve the contents of a resource",
        Arg("uri", "string", "URI of the resource to retrieve", required=True),
    ),
    tool(LIST_PROMPTS, "List all available prompts from connected MCP servers"),
    tool(
        DESCRIBE_PROMPT,
        "Get detailed information about a specific prompt",
        Arg("name", "string", "Name of the prompt to describe", required=True),
    ),
    tool(
        GET_PROMPT,
        "Get a prompt with the given arguments",
        Arg("name", "string", "Name of the prompt to get", required=True),
        Arg("arguments", "object", "Arguments to pass to the prompt (as JSON object with string values)"),
    ),
]

META_TOOL_NAMES = frozenset(t["name"] for t in META_TOOLS)
