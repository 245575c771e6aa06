"""The 11 meta-tools: each reads the catalog, or asks the backend, and answers with the Go muster's text result.

`run` is the one entry: the ingress calls it for a tools/call of a meta-tool in meta mode. Every failure is an
isError text result in the Go muster's words; nothing here raises to the caller except bugs.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from shared.meta import content
from shared.meta._gojson import format_v, marshal, marshal_indent
from shared.meta.catalog import MetaCatalog
from shared.meta.content import text_result
from shared.meta.definitions import (
    CALL_TOOL,
    DESCRIBE_PROMPT,
    DESCRIBE_RESOURCE,
    DESCRIBE_TOOL,
    FILTER_TOOLS,
    GET_PROMPT,
    GET_RESOURCE,
    LIST_CORE_TOOLS,
    LIST_PROMPTS,
    LIST_RESOURCES,
    LIST_TOOLS,
)
from shared.meta.errors import MetaError, ToolNotFound
from shared.meta.filtering import FilterOptions, InvalidArgument, filter_tools

Result = dict[str, Any]


class Backend(Protocol):
    """What the meta-tools need from the pipeline. Each raises a MetaError (RouteError, CallFailed) when the
    request cannot be routed or answered, and returns the upstream's result object otherwise."""

    async def call_tool(self, name: str, arguments: dict[str, Any], meta: Mapping[str, Any] | None) -> Result:
        """tools/call of an exposed name (family and core tools included); `meta` is the meta-tool call's own
        params._meta, so progress and other notifications of the inner call reach the agent under its token."""
        ...

    async def read_resource(self, uri: str) -> Result: ...

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> Result: ...


async def run(
    name: str,
    arguments: Mapping[str, Any] | None,
    catalog: MetaCatalog,
    backend: Backend,
    meta: Mapping[str, Any] | None = None,
) -> Result:
    """The result of meta-tool `name`; ToolNotFound when `name` is not one of the 11."""
    handler = _HANDLERS.get(name)
    if handler is None:
        raise ToolNotFound(name)
    args = arguments if isinstance(arguments, Mapping) else {}
    try:
        return await handler(args, catalog, backend, meta)
    except _Refused as refused:
        return text_result(refused.text, True)


class _Refused(Exception):
    """An argument the Go handler refuses before doing anything; `text` is the isError text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _required(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise _Refused(f"{key} argument is required")
    return value


def _found(item: Mapping[str, Any] | None, missing: str) -> Mapping[str, Any]:
    if item is None:
        raise _Refused(missing)
    return item


def _object(args: Mapping[str, Any]) -> Mapping[str, Any]:
    """The optional `arguments` object of call_tool and get_prompt."""
    value = args.get("arguments")
    if value is not None and not isinstance(value, Mapping):
        raise _Refused("arguments must be a JSON object")
    return value or {}


Handler = Callable[[Mapping[str, Any], MetaCatalog, Backend, Mapping[str, Any] | None], Awaitable[Result]]


async def _list_tools(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    response: dict[str, Any] = {
        "tools": [
            {"name": str(t.get("name", "")), "description": str(t.get("description") or "")}
            for t in catalog.visible_tools()
        ]
    }
    if catalog.servers_requiring_auth:
        response["servers_requiring_auth"] = [
            {"name": s, "status": "auth_required", "auth_tool": "core_auth_login"}
            for s in catalog.servers_requiring_auth
        ]
    return text_result(marshal_indent(response))


async def _describe_tool(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    name = _required(args, "name")
    tool = _found(catalog.find_tool(name), f"Tool not found: {name}")
    detail = {"description": str(tool.get("description") or ""), "inputSchema": tool.get("inputSchema"), "name": name}
    return text_result(marshal_indent(detail))


async def _filter_tools(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    try:
        options = FilterOptions.from_arguments(args)
    except InvalidArgument as exc:
        return text_result(str(exc), True)
    return text_result(*filter_tools(catalog, options))


async def _list_core_tools(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    return text_result(*filter_tools(catalog, FilterOptions.core(args)))


async def _call_tool(
    args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Mapping[str, Any] | None
) -> Result:
    name = _required(args, "name")
    arguments = _object(args)
    try:
        inner = await backend.call_tool(name, dict(arguments), meta)
    except MetaError as exc:
        inner = text_result(f"Tool execution failed: {exc.message}", True)
    return wrap_call_result(inner)


def wrap_call_result(inner: Mapping[str, Any]) -> Result:
    """call_tool's answer: the Go envelope `{"isError","content","structuredContent"?}` as compact JSON text (here
    with the upstream's `_meta` too), followed by the binary items natively; isError, structuredContent and
    _meta mirrored on the outer result."""
    raw = inner.get("content")
    items = [i for i in raw if isinstance(i, Mapping)] if isinstance(raw, list) else []
    is_error = inner.get("isError") is True
    envelope: dict[str, Any] = {"isError": is_error, "content": [content.describe(i) for i in items]}
    if inner.get("structuredContent") is not None:
        envelope["structuredContent"] = inner["structuredContent"]
    if inner.get("_meta") is not None:
        envelope["_meta"] = inner["_meta"]
    outer = text_result(marshal(envelope), is_error)
    outer["content"].extend(content.binary_items(items))
    if "structuredContent" in envelope:
        outer["structuredContent"] = envelope["structuredContent"]
    if "_meta" in envelope:
        outer["_meta"] = envelope["_meta"]
    return outer


async def _list_resources(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    if not catalog.resources:
        return text_result("No resources available")
    listing = []
    for resource in catalog.resources:
        entry = {"uri": str(resource.get("uri", "")), "name": str(resource.get("name") or "")}
        description = str(resource.get("description") or "") or entry["name"]
        if description:
            entry["description"] = description
        if resource.get("mimeType"):
            entry["mimeType"] = str(resource["mimeType"])
        listing.append(entry)
    return text_result(marshal_indent(listing))


async def _describe_resource(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    uri = _required(args, "uri")
    resource = _found(catalog.find_resource(uri), f"Resource not found: {uri}")
    detail = {
        "description": str(resource.get("description") or ""),
        "mimeType": str(resource.get("mimeType") or ""),
        "name": str(resource.get("name") or ""),
        "uri": uri,
    }
    return text_result(marshal_indent(detail))


async def _get_resource(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    uri = _required(args, "uri")
    try:
        result = await backend.read_resource(uri)
    except MetaError as exc:
        return text_result(f"Resource retrieval failed: {exc.message}", True)
    contents = result.get("contents")
    text, blobs = content.resource_text(contents if isinstance(contents, list) else [])
    answer = text_result(text)
    answer["content"].extend(blobs)
    return answer


async def _list_prompts(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    if not catalog.prompts:
        return text_result("No prompts available")
    listing = [
        {"name": str(p.get("name", "")), "description": str(p.get("description") or "")} for p in catalog.prompts
    ]
    return text_result(marshal_indent(listing))


async def _describe_prompt(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    name = _required(args, "name")
    prompt = _found(catalog.find_prompt(name), f"Prompt not found: {name}")
    detail: dict[str, Any] = {}
    arguments = prompt.get("arguments")
    if isinstance(arguments, list) and arguments:
        detail["arguments"] = [
            {
                "description": str(a.get("description") or ""),
                "name": str(a.get("name", "")),
                "required": a.get("required") is True,
            }
            for a in arguments
        ]
    detail["description"] = str(prompt.get("description") or "")
    detail["name"] = name
    return text_result(marshal_indent(detail))


async def _get_prompt(args: Mapping[str, Any], catalog: MetaCatalog, backend: Backend, meta: Any) -> Result:
    name = _required(args, "name")
    arguments = {str(k): format_v(v) for k, v in _object(args).items()}
    try:
        result = await backend.get_prompt(name, arguments)
    except MetaError as exc:
        return text_result(f"Prompt retrieval failed: {exc.message}", True)
    listed = result.get("messages")
    messages = [m for m in listed if isinstance(m, Mapping)] if isinstance(listed, list) else []
    items: list[Mapping[str, Any]] = [m["content"] if isinstance(m.get("content"), Mapping) else {} for m in messages]
    shown = [
        {"role": m.get("role", ""), "content": content.describe_prompt_content(item)}
        for m, item in zip(messages, items, strict=True)
    ]
    answer = text_result(marshal_indent(shown))
    answer["content"].extend(content.binary_items(items))
    return answer


_HANDLERS: dict[str, Handler] = {
    LIST_TOOLS: _list_tools,
    DESCRIBE_TOOL: _describe_tool,
    FILTER_TOOLS: _filter_tools,
    LIST_CORE_TOOLS: _list_core_tools,
    CALL_TOOL: _call_tool,
    LIST_RESOURCES: _list_resources,
    DESCRIBE_RESOURCE: _describe_resource,
    GET_RESOURCE: _get_resource,
    LIST_PROMPTS: _list_prompts,
    DESCRIBE_PROMPT: _describe_prompt,
    GET_PROMPT: _get_prompt,
}
