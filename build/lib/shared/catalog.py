"""The catalog: what every upstream server offers, stored by discovery in Valkey, read here and nowhere else.

`CatalogView` is the aggregated, routable form the ingress serves from: exposed names mapped back to
(server, upstream name), and the list responses encoded once per change rather than once per request.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from shared import streams
from shared.messages import ServerCatalog
from shared.naming import expose


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    name: str  # the upstream's own name
    safe: bool  # may run twice: read-only or idempotent, or declared so for the server


def _is_safe(tool: dict[str, Any], entry: ServerCatalog) -> bool:
    if entry.safe_tools is not None:
        return tool.get("name") in entry.safe_tools
    hints = tool.get("annotations") or {}
    return bool(hints.get("readOnlyHint") or hints.get("idempotentHint"))


def _template_pattern(template: str) -> re.Pattern[str]:
    # RFC 6570 level 1 is what servers use for resource templates: each {var} matches one path segment.
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")


class CatalogView:
    def __init__(self, entries: Iterable[ServerCatalog]) -> None:
        self.servers: dict[str, ServerCatalog] = {}
        self.tools: dict[str, Route] = {}
        self.prompts: dict[str, Route] = {}
        self.resources: dict[str, str] = {}
        self.templates: list[tuple[re.Pattern[str], str, str]] = []  # (pattern, template, server)
        tools: list[dict[str, Any]] = []
        prompts: list[dict[str, Any]] = []
        resources: list[dict[str, Any]] = []
        templates: list[dict[str, Any]] = []
        for entry in sorted(entries, key=lambda e: e.name):
            self.servers[entry.name] = entry
            if not entry.exposed or entry.state != "Connected":
                continue
            for tool in entry.tools:
                name = expose(entry.prefix, tool["name"])
                if name in self.tools:
                    continue
                self.tools[name] = Route(entry.name, tool["name"], _is_safe(tool, entry))
                tools.append({**tool, "name": name} if name != tool["name"] else tool)
            for prompt in entry.prompts:
                name = expose(entry.prefix, prompt["name"])
                if name in self.prompts:
                    continue
                self.prompts[name] = Route(entry.name, prompt["name"], True)
                prompts.append({**prompt, "name": name} if name != prompt["name"] else prompt)
            for resource in entry.resources:
                if resource["uri"] not in self.resources:
                    self.resources[resource["uri"]] = entry.name
                    resources.append(resource)
            for template in entry.resource_templates:
                self.templates.append((_template_pattern(template["uriTemplate"]), template["uriTemplate"], entry.name))
                templates.append(template)
        # With one server whose names pass unchanged, muster is a pass-through: what it cannot resolve itself
        # (a tool the server does not list, a resource URI it serves without listing) is the server's to answer.
        exposed = [e for e in self.servers.values() if e.exposed and e.state == "Connected"]
        self.sole: ServerCatalog | None = exposed[0] if len(exposed) == 1 and not exposed[0].prefix else None
        self.tools_json = orjson.dumps(tools)
        self.prompts_json = orjson.dumps(prompts)
        self.resources_json = orjson.dumps(resources)
        self.templates_json = orjson.dumps(templates)

    def resource_server(self, uri: str) -> str | None:
        server = self.resources.get(uri)
        if server is not None:
            return server
        for pattern, _, server in self.templates:
            if pattern.match(uri):
                return server
        return None

    def template_server(self, uri_template: str) -> str | None:
        for _, template, server in self.templates:
            if template == uri_template:
                return server
        return None


async def load(client: Redis, names: Iterable[str] | None = None) -> dict[str, ServerCatalog | None]:
    """Catalog entries by server name; None for a name that has no entry (the server was removed)."""
    if names is None:
        raw: dict[bytes, bytes] = await client.hgetall(streams.CATALOG)  # type: ignore[assignment]
        return {k.decode(): ServerCatalog.model_validate_json(v) for k, v in raw.items()}
    keys = list(names)
    if not keys:
        return {}
    values = await client.hmget(streams.CATALOG, keys)
    return {
        k: ServerCatalog.model_validate_json(v) if v is not None else None for k, v in zip(keys, values, strict=True)
    }


async def store(client: Redis, entries: Iterable[ServerCatalog], removed: Iterable[str] = ()) -> None:
    async with client.pipeline(transaction=True) as pipe:
        for entry in entries:
            pipe.hset(streams.CATALOG, entry.name, entry.model_dump_json(by_alias=True))
        for name in removed:
            pipe.hdel(streams.CATALOG, name)
        await pipe.execute()
