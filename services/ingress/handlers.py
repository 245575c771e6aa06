"""What each MCP method does at the ingress: answered here, from the Catalog or the session store, or forwarded
through the queue to the server it belongs to. Handlers take a RequestContext and the request's params (as a
Document: read its value, forward its bytes); `Handlers.methods` is the table a method is looked up in.
"""

import logging
from collections.abc import Awaitable, Callable

import orjson

from services.ingress.callers import Session
from services.ingress.current import CurrentCatalog
from services.ingress.forward import LEVELS, Forwarder, response
from services.ingress.http import Exchange, RequestContext
from services.ingress.meta import Meta
from services.ingress.routing import route
from services.ingress.sessions import Sessions
from services.ingress.visibility import Visibility
from shared import errors, streams
from shared.catalog import Catalog
from shared.messages import CancelCall, SubscriptionsChanged
from shared.protocol import HANDSHAKE_VERSIONS, MODERN_VERSIONS, MUSTER_VERSION
from shared.rawjson import Document
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
# server/discover is a per-request method: its caller adds the resultType.
DISCOVERED = orjson.dumps(
    {
        "supportedVersions": [*MODERN_VERSIONS, *HANDSHAKE_VERSIONS],
        "capabilities": CAPABILITIES,
        "_meta": {"io.modelcontextprotocol/serverInfo": SERVER_INFO},
    }
)
MAX_URI_BYTES = 8 * 1024  # a subscribed URI is kept in Valkey for the session's lifetime

# A method's handler: the result to answer with, or None when it answered by itself (a forwarded call).
# `catalog` is what the caller may see and call (visibility.py): with auth on, the user's own.
Method = Callable[[RequestContext, Document | None, Catalog], Awaitable[bytes | None]]


def _session(ctx: RequestContext, method: str) -> Session:
    """The methods that change what a session holds; a per-request client has no session to change."""
    caller = ctx.caller
    if not isinstance(caller, Session):
        raise errors.MethodNotFound(f"Method not found: {method}", status=caller.unknown_method_status)
    return caller


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
        listings: dict[str, Callable[[Catalog], bytes]] = {
            "tools/list": lambda c: self.meta.listing("tools/list") or b'{"tools":' + c.tools_json + b"}",
            "resources/list": lambda c: b'{"resources":' + c.resources_json + b"}",
            "resources/templates/list": lambda c: b'{"resourceTemplates":' + c.templates_json + b"}",
            "prompts/list": lambda c: b'{"prompts":' + c.prompts_json + b"}",
            "ping": lambda c: b"{}",
            "server/discover": lambda c: DISCOVERED,
        }
        self.methods: dict[str, Method] = {
            **{name: self._answer_with(listing) for name, listing in listings.items()},
            **{name: self._forward(name) for name in FORWARDED},
            "logging/setLevel": self.set_level,
            "resources/subscribe": self.subscribe,
            "resources/unsubscribe": self.unsubscribe,
        }

    @staticmethod
    def _answer_with(listing: Callable[[Catalog], bytes]) -> Method:
        async def answer(ctx: RequestContext, params: Document | None, catalog: Catalog) -> bytes:
            return listing(catalog)

        return answer

    def _forward(self, method: str) -> Method:
        async def forward(ctx: RequestContext, params: Document | None, catalog: Catalog) -> None:
            try:
                await self.forwarder.forward(ctx, catalog, method, params)
            except (errors.InvalidParams, errors.ResourceNotFound) as exc:  # the name may be a server's the caller
                value = params.value if params is not None else None  # must log in to first
                raise await self.visibility.explain(ctx.caller.principal, ctx.login, method, value) or exc from None

        return forward

    async def initialize(self, exchange: Exchange, params: Document | None, principal: str) -> None:
        """Opens a session; its id travels in the response's Mcp-Session-Id header."""
        value = params.value if params is not None else None
        if params is None or not isinstance(value, dict) or not isinstance(value.get("protocolVersion"), str):
            raise errors.InvalidParams("Invalid params: initialize requires params.protocolVersion")
        if not isinstance(value.get("capabilities") or {}, dict) or not isinstance(value.get("clientInfo") or {}, dict):
            raise errors.InvalidParams("Invalid params: capabilities and clientInfo must be objects")
        client = value.get("clientInfo") or {}
        wanted = value["protocolVersion"]
        version = wanted if wanted in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[0]
        capabilities = params.member("capabilities") if value.get("capabilities") else None
        client_info = params.member("clientInfo") if client else None
        session = await self.sessions.create(version, capabilities or b"{}", principal, client_info or b"{}")
        result = orjson.dumps({"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO})
        name = client.get("name")
        logger.info("session %s… opened by %.64s (%s)", session.id[:8], name if isinstance(name, str) else "?", version)
        await exchange.respond(200, response(exchange.request_id, result), [(b"mcp-session-id", session.session_id)])

    async def request(self, ctx: RequestContext, method: str, params: Document | None) -> None:
        catalog = await self.visibility.catalog(ctx.caller.principal, ctx.login)  # what this caller may see and call
        value = params.value if params is not None else None
        if isinstance(value, dict) and self.meta.answers(method, value):  # meta-tools, auth://status
            await self.meta.request(ctx, catalog, method, value)
            return
        handler = self.methods.get(method)
        if handler is None:
            raise errors.MethodNotFound(f"Method not found: {method}", status=ctx.caller.unknown_method_status)
        result = await handler(ctx, params, catalog)
        if result is not None:
            await ctx.respond(200, response(ctx.request_id, ctx.caller.result(method, result)))

    async def set_level(self, ctx: RequestContext, params: Document | None, catalog: Catalog) -> bytes:
        session = _session(ctx, "logging/setLevel")
        level = params.value.get("level") if params is not None and isinstance(params.value, dict) else None
        if not isinstance(level, str) or level not in LEVELS:
            raise errors.InvalidParams(f"Invalid params: level must be one of {', '.join(LEVELS)}")
        await self.sessions.set_level(session, level)
        await self.forwarder.notices.level(session, level, catalog)
        return b"{}"

    async def subscribe(self, ctx: RequestContext, params: Document | None, catalog: Catalog) -> bytes:
        await self.subscription(_session(ctx, "resources/subscribe"), True, params, catalog)
        return b"{}"

    async def unsubscribe(self, ctx: RequestContext, params: Document | None, catalog: Catalog) -> bytes:
        await self.subscription(_session(ctx, "resources/unsubscribe"), False, params, catalog)
        return b"{}"

    async def notification(self, session: Session, method: str, params: Document | None) -> None:
        if method == "notifications/roots/list_changed":
            await self.forwarder.notices.roots_changed(session, self.current.catalog)
            return
        if method != "notifications/cancelled" or params is None or not isinstance(params.value, dict):
            return
        request_id = params.member("requestId")
        if request_id is not None:
            key = session.call_key(request_id, b"", b"")
            reason = params.value.get("reason")
            self.forwarder.cancel(CancelCall(key=key.decode(), reason=reason if isinstance(reason, str) else ""))

    async def client_response(self, session: Session, message: Document) -> None:
        """The client answers a request an upstream sent during a call: pass it to the worker running that call,
        if it is a request this session was asked and has not answered yet."""
        ref = message.value.get("id")
        if not isinstance(ref, str) or "/" not in ref or not await self.sessions.answered(session, ref.encode()):
            logger.debug("a response from session %s… to no request it was asked was dropped", session.id[:8])
            return
        name = "result" if "result" in message.value else "error"
        body = message.member(name)
        assert body is not None
        self.forwarder.answer(ref.encode(), session.session_id, b'"' + name.encode() + b'":' + body)

    async def subscription(self, session: Session, subscribe: bool, params: Document | None, catalog: Catalog) -> None:
        """Record who listens to which resource (of the servers the caller sees). Discovery holds one upstream
        subscription per resource, on a session it listens to, and fans each update out to every subscriber: so
        each arrives exactly once."""
        target = route(catalog, "resources/subscribe", params)
        assert params is not None
        server, uri = target.server, params.value["uri"]
        resources = catalog.servers[server].capabilities.get("resources") or {}
        if not resources.get("subscribe"):
            raise errors.MethodNotFound(f"{server} does not offer resource subscriptions")
        members, entry = streams.subscribers(server, uri), f"{server}\n{uri}"
        mine = streams.session_subscriptions(session.id)
        if subscribe:
            if len(uri.encode()) > MAX_URI_BYTES:
                raise errors.InvalidParams(f"Invalid params: a subscribed URI is at most {MAX_URI_BYTES} bytes")
            adding = self.outbox.send(b"SADD", mine, entry)
            count = self.outbox.send(b"SCARD", mine)
            if await adding and await count > streams.SUBSCRIPTIONS_MAX:
                self.outbox.post(b"SREM", mine, entry)
                raise errors.InvalidParams(
                    f"Invalid params: a session subscribes to at most {streams.SUBSCRIPTIONS_MAX} resources"
                )
            self.outbox.post(b"EXPIRE", mine, self.sessions.ttl)
            self.outbox.post(b"SADD", members, session.id)
            self.outbox.post(b"EXPIRE", members, self.sessions.ttl)
            self.outbox.post(b"SADD", streams.subscribed(server), uri)
        else:
            self.outbox.post(b"SREM", members, session.id)
            self.outbox.post(b"SREM", mine, entry)
        self.outbox.publish(streams.CONTROL, SubscriptionsChanged(server=server))
