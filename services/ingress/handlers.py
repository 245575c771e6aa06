"""What each MCP method does at the ingress: answered here, from the Catalog or the session store, or forwarded
through the queue to the server it belongs to. Handlers take a RequestContext and write through it."""

import logging
from typing import Any

import orjson

from services.ingress.callers import Session
from services.ingress.current import CurrentCatalog
from services.ingress.forward import LEVELS, Forwarder, response
from services.ingress.http import Exchange, RequestContext
from services.ingress.meta import Meta
from services.ingress.routing import BadRequest, route
from services.ingress.sessions import Sessions
from services.ingress.visibility import Visibility
from shared import errors, streams
from shared.catalog import Catalog
from shared.messages import CancelCall, SubscriptionsChanged
from shared.protocol import HANDSHAKE_VERSIONS, MODERN_VERSIONS, MUSTER_VERSION
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

SERVER_INFO = {"name": "muster", "title": "muster MCP aggregator", "version": MUSTER_VERSION}
CAPABILITIES = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "logging": {},
    "completions": {},
}
FORWARDED = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
SUBSCRIPTIONS = ("resources/subscribe", "resources/unsubscribe")
# server/discover is a per-request method: its caller adds the resultType.
DISCOVERED = orjson.dumps(
    {
        "supportedVersions": [*MODERN_VERSIONS, *HANDSHAKE_VERSIONS],
        "capabilities": CAPABILITIES,
        "_meta": {"io.modelcontextprotocol/serverInfo": SERVER_INFO},
    }
)


class Handlers:
    def __init__(
        self,
        sessions: Sessions,
        current: CurrentCatalog,
        forwarder: Forwarder,
        outbox: Outbox,
        meta: Meta,
        visibility: Visibility,
    ) -> None:
        self.sessions = sessions
        self.current = current
        self.forwarder = forwarder
        self.outbox = outbox
        self.meta = meta
        self.visibility = visibility  # which servers each caller sees

    async def initialize(self, exchange: Exchange, params: Any, principal: str) -> None:
        """Opens a session; its id travels in the response's Mcp-Session-Id header."""
        if not isinstance(params, dict) or not isinstance(params.get("protocolVersion"), str):
            raise BadRequest(errors.INVALID_PARAMS, "Invalid params: initialize requires params.protocolVersion")
        capabilities = params.get("capabilities") or {}
        client = params.get("clientInfo") or {}
        if not isinstance(capabilities, dict) or not isinstance(client, dict):
            raise BadRequest(errors.INVALID_PARAMS, "Invalid params: capabilities and clientInfo must be objects")
        wanted = params["protocolVersion"]
        version = wanted if wanted in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[0]
        session = await self.sessions.create(version, capabilities, principal, client)
        result = orjson.dumps({"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO})
        logger.info("session %s… opened by %s (%s)", session.id[:8], client.get("name", "?"), version)
        await exchange.respond(200, response(exchange.request_id, result), [(b"mcp-session-id", session.session_id)])

    async def request(self, ctx: RequestContext, method: str, params: Any) -> None:
        owner = ctx.caller.principal
        catalog = await self.visibility.catalog(owner, ctx.login)  # the servers this caller may see and call
        if self.meta.answers(method, params):  # meta-tools, auth://status
            await self.meta.request(ctx, catalog, method, params)
            return
        if method in FORWARDED:
            try:
                await self.forwarder.forward(ctx, catalog, method, params)
            except BadRequest as exc:  # an unknown name may be a server's the caller must log in to first
                raise await self.visibility.explain(owner, ctx.login, method, params) or exc from None
            return
        result = self.meta.listing(method) or self.listing(method, catalog)
        if result is None:
            result = await self._session_method(ctx, method, params)
        await ctx.respond(200, response(ctx.request_id, ctx.caller.result(method, result)))

    def listing(self, method: str, catalog: Catalog) -> bytes | None:
        if method == "tools/list":
            return b'{"tools":' + catalog.tools_json + b"}"
        if method == "resources/list":
            return b'{"resources":' + catalog.resources_json + b"}"
        if method == "resources/templates/list":
            return b'{"resourceTemplates":' + catalog.templates_json + b"}"
        if method == "prompts/list":
            return b'{"prompts":' + catalog.prompts_json + b"}"
        if method == "ping":
            return b"{}"
        if method == "server/discover":
            return DISCOVERED
        return None

    async def _session_method(self, ctx: RequestContext, method: str, params: Any) -> bytes:
        """The methods that change what a session holds; a per-request client has no session to change."""
        session = ctx.caller
        if isinstance(session, Session):
            if method in SUBSCRIPTIONS:
                self.subscription(session, method == "resources/subscribe", params)
                return b"{}"
            if method == "logging/setLevel":
                level = params.get("level") if isinstance(params, dict) else None
                if level not in LEVELS:
                    raise BadRequest(errors.INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(LEVELS)}")
                await self.sessions.set_level(session, level)
                await self.forwarder.notices.level(session, level, self.current.catalog)
                return b"{}"
        raise BadRequest(errors.METHOD_NOT_FOUND, f"Method not found: {method}", status=session.unknown_method_status)

    async def notification(self, session: Session, method: str, params: Any) -> None:
        if method == "notifications/cancelled" and isinstance(params, dict) and "requestId" in params:
            key = session.id + " " + orjson.dumps(params["requestId"]).decode()
            self.forwarder.cancel(CancelCall(key=key, reason=str(params.get("reason") or "")))
        elif method == "notifications/roots/list_changed":
            await self.forwarder.notices.roots_changed(session, self.current.catalog)

    def client_response(self, session: Session, message: dict[str, Any]) -> None:
        """The client answers a request an upstream sent during a call: pass it to the worker running that call."""
        ref = message["id"]
        if isinstance(ref, str) and "/" in ref:
            member = (
                b'"result":' + orjson.dumps(message["result"])
                if "result" in message
                else b'"error":' + orjson.dumps(message["error"])
            )
            self.forwarder.answer(ref.encode(), session.session_id, member)

    def subscription(self, session: Session, subscribe: bool, params: Any) -> None:
        """Record who listens to which resource. Discovery holds one upstream subscription per resource, on a
        session it listens to, and fans each update out to every subscriber: so each arrives exactly once."""
        catalog = self.current.catalog
        target = route(catalog, "resources/subscribe", params)
        server, uri = target.server, params["uri"]
        resources = catalog.servers[server].capabilities.get("resources") or {}
        if not resources.get("subscribe"):
            raise BadRequest(errors.METHOD_NOT_FOUND, f"{server} does not offer resource subscriptions")
        members, entry = streams.subscribers(server, uri), f"{server}\n{uri}"
        if subscribe:
            self.outbox.post(b"SADD", members, session.id)
            self.outbox.post(b"SADD", streams.subscribed(server), uri)
            self.outbox.post(b"SADD", streams.session_subscriptions(session.id), entry)
        else:
            self.outbox.post(b"SREM", members, session.id)
            self.outbox.post(b"SREM", streams.session_subscriptions(session.id), entry)
        self.outbox.publish(streams.CONTROL, SubscriptionsChanged(server=server))
