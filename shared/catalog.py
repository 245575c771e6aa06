"""The Catalog: what agents see of all servers together, built from the server records, and routable.

Exposed names map back to (server, upstream name), or for a family tool to its members (shared/meta/families.py);
the list responses are encoded once per change rather than once per request, and what the meta-tools read (the
filter_tools index) is built at most once per change too.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from shared.messages import ServerRecord
from shared.meta import auth_status
from shared.meta.catalog import ToolCatalog
from shared.meta.core import CORE_TOOLS
from shared.meta.families import FamilyRoute, Route, ToolRoute, assemble

__all__ = ["Catalog", "FamilyRoute", "Route", "Template", "ToolRoute"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Template:
    uri_template: str
    server: str
    matcher: UriTemplate | None  # None: a template the mcp package cannot parse routes only by its own text


def _matcher(template: str, server: str) -> UriTemplate | None:
    try:
        return UriTemplate.parse(template)
    except InvalidUriTemplate as exc:
        logger.warning("resource template %r of %s cannot be matched: %s", template, server, exc)
        return None


def _live(record: ServerRecord) -> bool:
    return record.exposed and record.state == "Connected"


class Catalog:
    """One revision of what agents see. `tools` routes an exposed tool name to its server (a `Route`) or to its
    family (a `FamilyRoute`, resolved with the call's instance argument); `notes` says why names fell back to
    per-server ones or were dropped."""

    def __init__(self, records: Iterable[ServerRecord]) -> None:
        self.servers: dict[str, ServerRecord] = {r.name: r for r in sorted(records, key=lambda r: r.name)}
        exposure = assemble(self.servers.values())
        self.tools: dict[str, ToolRoute] = exposure.routes
        self.prompts: dict[str, Route] = exposure.prompt_routes
        self.notes = exposure.notes
        self.tool_list = exposure.tools
        self.prompt_list = exposure.prompts
        self.resources: dict[str, str] = {}  # uri -> server
        self.templates: list[Template] = []
        # auth://status is muster's own: listed first, read at the ingress, never routed to a server.
        self.resource_list: list[dict[str, Any]] = [auth_status.RESOURCE]
        templates: list[dict[str, Any]] = []
        for record in self.servers.values():
            if not _live(record):
                continue
            for resource in record.resources:
                if resource["uri"] not in self.resources and resource["uri"] != auth_status.URI:
                    self.resources[resource["uri"]] = record.name
                    self.resource_list.append(resource)
            for template in record.resource_templates:
                text = template["uriTemplate"]
                self.templates.append(Template(text, record.name, _matcher(text, record.name)))
                templates.append(template)
        # With one server whose names pass unchanged, muster is a pass-through: what it cannot resolve itself
        # (a tool the server does not list, a resource URI it serves without listing) is the server's to answer.
        live = [r for r in self.servers.values() if _live(r)]
        self.sole: ServerRecord | None = live[0] if len(live) == 1 and not live[0].prefix else None
        self.tools_json = orjson.dumps(self.tool_list)
        self.prompts_json = orjson.dumps(self.prompt_list)
        self.resources_json = orjson.dumps(self.resource_list)
        self.templates_json = orjson.dumps(templates)

    @cached_property
    def tool_catalog(self) -> ToolCatalog:
        """What list_tools, describe_tool and filter_tools read: the exposed tools and the core tools, with the
        filter_tools index; built on first use, once per revision, and shared by every call of the revision."""
        return ToolCatalog([*self.tool_list, *CORE_TOOLS])

    @cached_property
    def tool_servers(self) -> list[frozenset[str]]:
        """Per position of `tool_catalog`, the servers behind the tool (none for a core tool)."""
        servers: list[frozenset[str]] = []
        for name in self.tool_catalog.names:
            route = self.tools.get(name)
            if isinstance(route, FamilyRoute):
                servers.append(frozenset(route.members))
            else:
                servers.append(frozenset({route.server}) if route is not None else frozenset())
        return servers

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
