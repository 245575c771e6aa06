"""The exposed tool and prompt tables of a catalog, with the Go muster's `spec.family` collapsing.

Servers that declare the same `family.name` offer each tool once, as `x_<family>_<tool>`, with a required
instance argument (`family.instanceArg`, e.g. `management_cluster`) whose enum lists the members that are up and
offer the tool; the call goes to the member it names, with that argument removed. Fallbacks to per-server names,
as in the Go muster (`registry.go` assembleExposedTools):

- per tool, when the members' descriptions of it differ, or a member's schema already has a property named like
  the instance argument;
- per family, when its members disagree on `instanceArg`. This is decided over every entry that declares the
  family, up or down, so a member going down never renames the family's tools.

Everything is derived from the entries alone: the same entries give the same names and routes in every process
and after every restart. A member that is down only leaves the enums (and the routes) of its tools.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.messages import ServerState
from shared.meta.errors import InstanceRequired, InstanceUnavailable, ToolNotFound
from shared.naming import expose

UP: ServerState = "Connected"


class FamilySpec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def instance_arg(self) -> str: ...


class Entry(Protocol):
    """One server's catalog entry, as far as naming reads it (ServerCatalog plus its spec.family)."""

    @property
    def name(self) -> str: ...

    @property
    def prefix(self) -> str: ...  # the prefix in force; "" when names pass unchanged

    @property
    def state(self) -> ServerState: ...

    @property
    def exposed(self) -> bool: ...

    @property
    def family(self) -> FamilySpec | None: ...

    @property
    def tools(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def prompts(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def safe_tools(self) -> Sequence[str] | None: ...


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    name: str  # the upstream's own name
    safe: bool  # may run twice: read-only or idempotent, or declared so for the server


@dataclass(frozen=True, slots=True)
class FamilyRoute:
    """An exposed family tool: which member runs it is the caller's choice, made with `instance_arg`."""

    family: str
    instance_arg: str
    members: Mapping[str, Route]  # server name -> route, for the members that are up and offer the tool

    def resolve(self, exposed: str, arguments: Mapping[str, Any]) -> tuple[Route, dict[str, Any]]:
        """The chosen member's route and the arguments to forward (without the instance argument)."""
        instance = arguments.get(self.instance_arg)
        if not isinstance(instance, str) or not instance:
            raise InstanceRequired(exposed, self.instance_arg, self.members)
        route = self.members.get(instance)
        if route is None:
            raise InstanceUnavailable(exposed, instance, self.members)
        return route, {k: v for k, v in arguments.items() if k != self.instance_arg}


ToolRoute = Route | FamilyRoute


def resolve(
    routes: Mapping[str, ToolRoute], exposed: str, arguments: Mapping[str, Any]
) -> tuple[Route, dict[str, Any]]:
    """Where a tools/call of `exposed` goes and with which arguments; a RouteError when it goes nowhere."""
    route = routes.get(exposed)
    if route is None:
        raise ToolNotFound(exposed)
    if isinstance(route, FamilyRoute):
        return route.resolve(exposed, arguments)
    return route, dict(arguments)


@dataclass
class Exposure:
    """The exposed definitions in listing order and the routes back; `notes` says why names fell back or were
    dropped, for one log line each when the catalog changes."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    routes: dict[str, ToolRoute] = field(default_factory=dict)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    prompt_routes: dict[str, Route] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def _add_tool(self, definition: dict[str, Any], route: ToolRoute) -> None:
        name = definition["name"]
        if name in self.routes:
            self.notes.append(f"tool {name} is offered twice; the first one in server order is kept")
            return
        self.routes[name] = route
        self.tools.append(definition)


def is_safe(tool: Mapping[str, Any], safe_tools: Sequence[str] | None) -> bool:
    if safe_tools is not None:
        return tool.get("name") in safe_tools
    hints = tool.get("annotations") or {}
    return bool(hints.get("readOnlyHint") or hints.get("idempotentHint"))


@dataclass
class _Bucket:
    family: str
    instance_arg: str
    prefixed: bool
    members: list[tuple[Entry, Mapping[str, Any]]] = field(default_factory=list)


def assemble(entries: Iterable[Entry]) -> Exposure:
    """Exposed tools and prompts of the given entries, in the Go muster's order: the tools of servers without a
    (working) family by server name, then the family tools by (family, tool)."""
    ordered = sorted(entries, key=lambda e: e.name)
    split = split_families(ordered)
    out = Exposure()
    buckets: dict[tuple[str, str], _Bucket] = {}
    for entry in ordered:
        if not entry.exposed or entry.state != UP:
            continue
        family = entry.family if entry.family is not None and entry.family.name not in split else None
        for tool in entry.tools:
            if family is None:
                out._add_tool(_renamed(tool, expose(entry.prefix, tool["name"])), _route(entry, tool))
                continue
            key = (family.name, tool["name"])
            bucket = buckets.setdefault(key, _Bucket(family.name, family.instance_arg, bool(entry.prefix)))
            bucket.members.append((entry, tool))
    for (family_name, tool_name), bucket in sorted(buckets.items()):
        _add_family_tool(out, family_name, tool_name, bucket)
    for name in sorted(split):
        out.notes.append(f"family {name}: members disagree on instanceArg ({split[name]}); per-server names")
    _add_prompts(out, ordered)
    return out


def _add_family_tool(out: Exposure, family_name: str, tool_name: str, bucket: _Bucket) -> None:
    """One tool the members of a family offer: once, with the instance argument, or per server where they diverge."""
    reason = _divergence(bucket)
    if reason:
        out.notes.append(f"family {family_name} tool {tool_name}: {reason}; per-server names for this tool")
        for entry, tool in bucket.members:
            out._add_tool(_renamed(tool, expose(entry.prefix, tool["name"])), _route(entry, tool))
        return
    servers = sorted(entry.name for entry, _ in bucket.members)
    exposed = family_tool_name(family_name, tool_name, bucket.prefixed)
    first = bucket.members[0][1]
    definition = {
        **first,
        "name": exposed,
        "description": _annotate(str(first.get("description") or ""), servers),
        "inputSchema": _with_instance(first.get("inputSchema") or {}, bucket.instance_arg, servers),
    }
    members = {entry.name: _route(entry, tool) for entry, tool in bucket.members}
    out._add_tool(definition, FamilyRoute(family_name, bucket.instance_arg, dict(sorted(members.items()))))


def family_tool_name(family: str, tool: str, prefixed: bool) -> str:
    """`x_<family>_<tool>`, or the tool's own name when the prefix mode lets names pass unchanged."""
    return expose(family, tool) if prefixed else tool


def _add_prompts(out: Exposure, ordered: Sequence[Entry]) -> None:
    """The prompts of the servers that are up, by server name; a name taken twice keeps the first."""
    for entry in ordered:
        if not entry.exposed or entry.state != UP:
            continue
        for prompt in entry.prompts:
            name = expose(entry.prefix, prompt["name"])
            if name not in out.prompt_routes:
                out.prompt_routes[name] = Route(entry.name, prompt["name"], True)
                out.prompts.append(_renamed(prompt, name))


class _Declares(Protocol):
    @property
    def family(self) -> FamilySpec | None: ...


def split_families(entries: Iterable[_Declares]) -> dict[str, str]:
    """Families whose members (up or not) declare different instance arguments, with those arguments: their
    members keep per-server names."""
    seen: dict[str, set[str]] = {}
    for entry in entries:
        if entry.family is not None:
            seen.setdefault(entry.family.name, set()).add(entry.family.instance_arg)
    return {name: ", ".join(sorted(args)) for name, args in seen.items() if len(args) > 1}


def _divergence(bucket: _Bucket) -> str:
    descriptions = {str(tool.get("description") or "") for _, tool in bucket.members}
    if len(descriptions) > 1:
        return "descriptions differ between " + ", ".join(sorted(e.name for e, _ in bucket.members))
    for entry, tool in bucket.members:
        properties = (tool.get("inputSchema") or {}).get("properties") or {}
        if bucket.instance_arg in properties:
            return f"{entry.name} already has a property {bucket.instance_arg}"
    return ""


def _with_instance(schema: Mapping[str, Any], instance_arg: str, servers: list[str]) -> dict[str, Any]:
    properties = dict(schema.get("properties") or {})
    properties[instance_arg] = {
        "type": "string",
        "enum": servers,
        "description": "Target instance to execute this tool on. Available: " + ", ".join(servers),
    }
    required = [r for r in schema.get("required") or [] if r != instance_arg] + [instance_arg]
    return {**schema, "properties": properties, "required": required}


def _annotate(description: str, servers: list[str]) -> str:
    # An existing trailer is replaced, not stacked, as in the Go muster.
    cut = description.rfind(" (available on servers:")
    if cut >= 0:
        description = description[:cut]
    return f"{description} (available on servers: {', '.join(servers)})"


def _renamed(definition: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {**definition, "name": name}


def _route(entry: Entry, tool: Mapping[str, Any]) -> Route:
    return Route(entry.name, tool["name"], is_safe(tool, entry.safe_tools))
