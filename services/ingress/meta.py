"""muster's own answers at the ingress: exposure mode `meta` (tools/list is the 11 meta-tools, and a tools/call of
one runs shared/meta's handler) and the `auth://status` resource (in both modes).

A meta-tool that needs an upstream (call_tool, get_resource, get_prompt) sends its one inner call through the
queue like any call, under the meta-tool call's own request id and `_meta`: the upstream's progress, log
messages and requests reach the agent on the meta-tool call's stream, a cancellation of it cancels the inner
call, and the wrapped result is the stream's last event.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import orjson

from services.ingress.auth_state import AuthState
from services.ingress.core_tools import CORE_TOOL_NAMES, CoreTools
from services.ingress.forward import Flight, Forwarder, response
from services.ingress.http import RequestContext
from services.ingress.routing import Target
from shared import errors
from shared.catalog import Catalog
from shared.messages import ReplyKind
from shared.meta import auth_status, families, handlers
from shared.meta.catalog import MetaCatalog
from shared.meta.definitions import LIST_TOOLS, META_TOOL_NAMES, META_TOOLS
from shared.meta.errors import CallFailed, ToolNotFound
from shared.rawjson import Document

Expose = Literal["direct", "meta"]
META_LISTING = b'{"tools":' + orjson.dumps(META_TOOLS) + b"}"


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # e.g. an integer beyond 64 bits, which orjson refuses
        raise CallFailed(f"the upstream's answer cannot be read: {exc}") from None


def _reason(body: bytes) -> str:
    """The message of a JSON-RPC error object, as call_tool's "Tool execution failed: <message>"."""
    try:
        message = orjson.loads(body).get("message")
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    return message if isinstance(message, str) and message else "the call failed"


class Meta:
    def __init__(self, expose: Expose, forwarder: Forwarder, auth: AuthState) -> None:
        self.expose = expose
        self.forwarder = forwarder
        self.auth = auth
        self.core = CoreTools(auth)

    def listing(self, method: str) -> bytes | None:
        """tools/list in meta mode: the same 11 tools for every catalog revision."""
        return META_LISTING if method == "tools/list" and self.expose == "meta" else None

    def answers(self, method: str, params: Any) -> bool:
        """Whether the request is muster's own to answer: a meta-tool in meta mode, or a read of auth://status."""
        if not isinstance(params, dict):
            return False
        if method == "tools/call":
            return self.expose == "meta" and params.get("name") in META_TOOL_NAMES
        return method == "resources/read" and params.get("uri") == auth_status.URI

    async def request(self, ctx: RequestContext, catalog: Catalog, method: str, params: dict[str, Any]) -> None:
        if method == "resources/read":
            body = orjson.dumps(await self.auth_status(ctx, catalog))
            await ctx.respond(200, response(ctx.request_id, ctx.caller.result(method, body)))
            return
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise errors.InvalidParams("Invalid params: params.arguments must be an object")
        meta = params.get("_meta")
        backend = QueueBackend(ctx, catalog, self.forwarder, self.core, lambda: self.auth_status(ctx, catalog))
        try:
            view = await self.catalog_view(ctx, catalog, params["name"])
            meta = meta if isinstance(meta, dict) else None
            result = await handlers.run(params["name"], arguments, view, backend, meta)
            await backend.respond(result)
        finally:
            backend.close()

    async def auth_status(self, ctx: RequestContext, catalog: Catalog) -> dict[str, Any]:
        servers = await self.auth.servers(ctx.caller, catalog)
        return auth_status.contents(servers, self.auth.authenticated(ctx.caller))

    async def catalog_view(self, ctx: RequestContext, catalog: Catalog, name: str) -> MetaCatalog:
        """What one meta-tool call reads: the revision's index, narrowed to what the caller may see."""
        visible_servers = await self.auth.visible(ctx.caller, catalog)
        visible = None
        if visible_servers is not None:
            allowed = frozenset(visible_servers)
            # A core tool (no servers behind it) is always there; a family tool while any member is visible.
            visible = [p for p, s in enumerate(catalog.tool_servers) if not s or s & allowed]
        requiring: list[str] = []
        if name == LIST_TOOLS:
            session = self.auth.authenticated(ctx.caller)
            for server in await self.auth.servers(ctx.caller, catalog):
                if not server.sso and auth_status.status_of(server, session) == "auth_required":
                    requiring.append(server.name)
        return MetaCatalog(catalog.tool_catalog, catalog.resource_list, catalog.prompt_list, requiring, visible)


class QueueBackend:
    """The meta-tools' Backend for one meta-tool call: its inner call goes through the queue on the meta-tool
    call's own request, and `respond` answers the request (on the stream the inner call opened, if it did)."""

    def __init__(
        self,
        ctx: RequestContext,
        catalog: Catalog,
        forwarder: Forwarder,
        core: CoreTools,
        auth_status: Callable[[], Awaitable[dict[str, Any]]],
    ) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.forwarder = forwarder
        self.core = core
        self.auth_status = auth_status
        self.flight: Flight | None = None

    async def call_tool(self, name: str, arguments: dict[str, Any], meta: Mapping[str, Any] | None) -> dict[str, Any]:
        if name in CORE_TOOL_NAMES:
            return await self.core.call(name, arguments, self.ctx.caller, self.catalog, self.ctx.login)
        try:
            route, forwarded = families.resolve(self.catalog.tools, name, arguments)
        except ToolNotFound:
            if self.catalog.sole is None:
                raise  # call_tool's "Tool execution failed: tool not found: <name>"
            # the one server whose names pass unchanged decides about names muster does not know, as in direct mode
            route, forwarded = families.Route(self.catalog.sole.name, name, False), arguments
        params: dict[str, Any] = {"name": route.name, "arguments": forwarded}
        if meta:
            params["_meta"] = dict(meta)
        inner = self.ctx.caller.upstream_params(Document(orjson.dumps(params), params))
        return await self._run("tools/call", route.server, inner.value if inner is not None else params, route.safe)

    async def read_resource(self, uri: str) -> dict[str, Any]:
        if uri == auth_status.URI:
            return await self.auth_status()
        server = self.catalog.resource_server(uri) or (self.catalog.sole.name if self.catalog.sole else None)
        if server is None:
            raise CallFailed(f"resource not found: {uri}")
        return await self._run("resources/read", server, {"uri": uri}, True)

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> dict[str, Any]:
        route = self.catalog.prompts.get(name)
        if route is None:
            if self.catalog.sole is None:
                raise CallFailed(f"prompt not found: {name}")
            route = families.Route(self.catalog.sole.name, name, True)
        return await self._run("prompts/get", route.server, {"name": route.name, "arguments": arguments}, True)

    async def _run(self, method: str, server: str, params: Any, safe: bool) -> dict[str, Any]:
        if self.flight is not None:
            raise CallFailed("a meta-tool call makes one upstream call")
        try:
            name = params.get("name", "") if isinstance(params, dict) else ""  # for metrics and the log line
            target = Target(server, orjson.dumps(params), safe, name)
            self.flight = await self.forwarder.submit(self.ctx, method, target)
        except errors.MusterError as exc:  # refused, or possibly queued without Valkey saying so
            raise CallFailed(exc.message) from None
        reply = await self.forwarder.outcome(self.flight)
        if reply.kind is ReplyKind.ERROR:
            raise CallFailed(_reason(reply.body))
        result = _loads(reply.body)
        if not isinstance(result, dict):
            raise CallFailed(f"{server} answered {method} with something that is not a result object")
        return result

    async def respond(self, result: dict[str, Any]) -> None:
        message = response(self.ctx.request_id, self.ctx.caller.result("tools/call", orjson.dumps(result)))
        if self.flight is not None:
            await self.forwarder.finish(self.flight, message)
        else:
            await self.ctx.respond(200, message)

    def close(self) -> None:
        if self.flight is not None:
            self.forwarder.close(self.flight)
