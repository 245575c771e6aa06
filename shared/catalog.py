"""The Catalog: what agents see of all servers together, built from the server records, and routable.

Exposed names map back to (server, upstream name); the list responses are encoded once per change rather than
once per request.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from shared.messages import ServerRecord
from shared.naming import expose

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    name: str  # the upstream's own name
    safe: bool  # may run twice: read-only or idempotent, or declared so for the server


@dataclass(frozen=True, slots=True)
class Template:
    uri_template: str
    server: str
    matcher: UriTemplate | None  # None: a template the mcp package cannot parse routes only by its own text


def _is_safe(tool: dict[str, Any], record: ServerRecord) -> bool:
    if record.safe_tools is not None:
        return tool.get("name") in record.safe_tools
    hints = tool.get("annotations") or {}
    return bool(hints.get("readOnlyHint") or hints.get("idempotentHint"))


def _matcher(template: str, server: str) -> UriTemplate | None:
    try:
        return UriTemplate.parse(template)
    except InvalidUriTemplate as exc:
        logger.warning("resource template %r of %s cannot be matched: %s", template, server, exc)
        return None


def _live(record: ServerRecord) -> bool:
    return record.exposed and record.state == "Connected"


class Catalog:
    def __init__(self, records: Iterable[ServerRecord]) -> None:
        self.servers: dict[str, ServerRecord] = {}
        self.tools: dict[str, Route] = {}
        self.prompts: dict[str, Route] = {}
        self.resources: dict[str, str] = {}  # uri -> server
        self.templates: list[Template] = []
        tools: list[dict[str, Any]] = []
        prompts: list[dict[str, Any]] = []
        resources: list[dict[str, Any]] = []
        templates: list[dict[str, Any]] = []
        for record in sorted(records, key=lambda r: r.name):
            self.servers[record.name] = record
            if not _live(record):
                continue
            tools += self._add_named(self.tools, record, record.tools, safe=None)
            prompts += self._add_named(self.prompts, record, record.prompts, safe=True)
            for resource in record.resources:
                if resource["uri"] not in self.resources:
                    self.resources[resource["uri"]] = record.name
                    resources.append(resource)
            for template in record.resource_templates:
                text = template["uriTemplate"]
                self.templates.append(Template(text, record.name, _matcher(text, record.name)))
                templates.append(template)
        # With one server whose names pass unchanged, muster is a pass-through: what it cannot resolve itself
        # (a tool the server does not list, a resource URI it serves without listing) is the server's to answer.
        live = [r for r in self.servers.values() if _live(r)]
        self.sole: ServerRecord | None = live[0] if len(live) == 1 and not live[0].prefix else None
        self.tools_json = orjson.dumps(tools)
        self.prompts_json = orjson.dumps(prompts)
        self.resources_json = orjson.dumps(resources)
        self.templates_json = orjson.dumps(templates)

    @staticmethod
    def _add_named(
        routes: dict[str, Route], record: ServerRecord, items: list[dict[str, Any]], *, safe: bool | None
    ) -> list[dict[str, Any]]:
        """Routes for tools or prompts under their exposed names; the first server to claim a name keeps it."""
        listed = []
        for item in items:
            name = expose(record.prefix, item["name"])
            if name in routes:
                continue
            routes[name] = Route(record.name, item["name"], _is_safe(item, record) if safe is None else safe)
            listed.append({**item, "name": name} if name != item["name"] else item)
        return listed

    def resource_server(self, uri: str) -> str | None:
        server = self.resources.get(uri)
        if server is not None:
            return server
        for template in self.templates:
            if template.matcher is not None and template.matcher.match(uri) is not None:
                return template.server
        return None

    def template_server(self, uri_template: str) -> str | None:
        for template in self.templates:
            if template.uri_template == uri_template:
                return template.server
        return None
