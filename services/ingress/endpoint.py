"""The MCP endpoint over Streamable HTTP: POST, GET and DELETE, for the handshake protocols (2024-11-05 to
2025-11-25, a session per client) and the per-request protocol (2026-07-28, no session).

This is the transport side: each request is parsed once and its caller found (a session, or an envelope);
what the method means is the handlers' business. Anything wrong becomes a BadRequest, answered here with its
JSON-RPC error and HTTP status.
"""

import asyncio
import logging
import time
from typing import Any

import orjson
from redis.exceptions import RedisError

from services.ingress.bearer import ANONYMOUS, Bearer, Who, deny
from services.ingress.callers import Caller, Session
from services.ingress.config import IngressSettings
from services.ingress.envelope import is_modern, open_envelope
from services.ingress.forward import error
from services.ingress.get_streams import GetStreams
from services.ingress.handlers import Handlers
from services.ingress.http import (
    EVENT_STREAM,
    JSON,
    Allow,
    Exchange,
    Head,
    Receive,
    RequestContext,
    Scope,
    Send,
    TooLarge,
    read_body,
    respond_text,
)
from services.ingress.oauth.resource import Denial
from services.ingress.routing import BadRequest
from services.ingress.sessions import Sessions
from services.ingress.telemetry import Telemetry
from shared import errors
from shared.protocol import HANDSHAKE_VERSIONS

logger = logging.getLogger(__name__)

SERVICE_UNAVAILABLE = "muster cannot reach its queue; retry shortly"


class Endpoint:
    def __init__(
        self,
        settings: IngressSettings,
        sessions: Sessions,
        handlers: Handlers,
        get_streams: GetStreams,
        telemetry: Telemetry,
        bearer: Bearer | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.handlers = handlers
        self.get_streams = get_streams
        self.telemetry = telemetry
        self.bearer = bearer  # with auth on: every request's token is checked before anything else
        self.hosts = Allow(settings.allowed_hosts)
        self.origins = Allow(settings.allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = Head(scope)
        if head.host and not self.hosts(head.host):
            await respond_text(send, 421, f"Invalid Host header: {head.host.decode('latin-1')}")
            return
        if head.origin is not None and not self.origins(head.origin):
            await respond_text(send, 403, f"Invalid Origin header: {head.origin.decode('latin-1')}")
            return
        exchange = Exchange(head, receive, send, b"null")
        try:
            who = ANONYMOUS if self.bearer is None else await self.bearer.who(head)
            if isinstance(who, Denial):
                await deny(send, who)
                return
            if head.method == "POST":
                await self.post(exchange, who)
            elif head.method == "GET":
                await self.get(exchange, who)
            elif head.method == "DELETE":
                await self.delete(exchange, who)
            else:
                await exchange.respond_text(405, "Method Not Allowed", [(b"allow", b"GET, POST, DELETE")])
        except BadRequest as exc:  # answered with the request's own id, once it is known
            await exchange.respond(exc.status, error(exchange.request_id, exc.code, exc.message, exc.data))
        except (RedisError, ConnectionError) as exc:  # Valkey unreachable, through redis-py or the hot-path connection
            logger.error("valkey unavailable: %s", exc)
            body = error(exchange.request_id, errors.SERVICE_UNAVAILABLE, SERVICE_UNAVAILABLE, {"retryAfter": 1})
            await exchange.respond(503, body, [(b"retry-after", b"1")])

    # --- POST ----------------------------------------------------------------------------------------------
    async def post(self, exchange: Exchange, who: Who) -> None:
        message = await self._message(exchange)
        method = message.get("method")
        has_id = "id" in message
        if has_id:
            exchange.request_id = orjson.dumps(message["id"])
        principal = who.owner
        if method is None:
            if not (has_id and ("result" in message or "error" in message)):
                raise BadRequest(errors.INVALID_REQUEST, "Invalid Request: no method", status=400)
            self.handlers.client_response(await self.session(exchange.head, principal), message)
            await exchange.accepted()
        elif not isinstance(method, str):
            raise BadRequest(errors.INVALID_REQUEST, "Invalid Request: method must be a string", status=400)
        elif is_modern(exchange.head, method):
            if not has_id:  # no client notification means anything on this wire
                await exchange.accepted()
                return
            caller = open_envelope(exchange.head, message, principal)
            await self.request(self._context(exchange, caller, who), method, message.get("params"))
        elif method == "initialize" and has_id:
            started, code = time.perf_counter(), None
            try:
                await self.handlers.initialize(exchange, message.get("params"), principal)
            except BaseException as exc:
                code = _code(exc)
                raise
            finally:
                self.telemetry.answered(method, None, message.get("params"), code, started)
        else:
            session = await self.session(exchange.head, principal)
            if has_id:
                await self.request(self._context(exchange, session, who), method, message.get("params"))
            else:
                await self.handlers.notification(session, method, message.get("params"))
                await exchange.accepted()

    async def _message(self, exchange: Exchange) -> dict[str, Any]:
        """The request's one JSON-RPC message, read and parsed once."""
        head = exchange.head
        if not head.json_body:
            raise BadRequest(
                errors.INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json", status=415
            )
        if not (head.accepts(JSON) or head.accepts(EVENT_STREAM)):
            raise BadRequest(
                errors.INVALID_REQUEST,
                "Not Acceptable: Client must accept application/json and text/event-stream",
                status=406,
            )
        limit = self.settings.max_body_bytes
        try:
            if head.content_length is not None and head.content_length > limit:
                raise TooLarge
            body = await read_body(exchange.receive, limit)
        except TooLarge:
            raise BadRequest(
                errors.INVALID_REQUEST, f"Payload Too Large: the limit is {limit} bytes", status=413
            ) from None
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(errors.PARSE_ERROR, f"Parse error: {exc}", status=400) from None
        if isinstance(message, list):
            raise BadRequest(errors.INVALID_REQUEST, "Invalid Request: batches are not supported", status=400)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise BadRequest(errors.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message", status=400)
        request_id = message.get("id")
        if "id" in message and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
            raise BadRequest(errors.INVALID_REQUEST, "Invalid Request: id must be a string or an integer", status=400)
        return message

    async def request(self, ctx: RequestContext, method: str, params: Any) -> None:
        """A request with an id: what a routed call records is the forwarder's, the rest is recorded here."""
        started, code = time.perf_counter(), None
        try:
            await self.handlers.request(ctx, method, params)
        except BaseException as exc:
            code = _code(exc)
            raise
        finally:
            if not ctx.routed:
                self.telemetry.answered(method, ctx.caller, params, code, started)

    @staticmethod
    def _context(exchange: Exchange, caller: Caller, who: Who) -> RequestContext:
        return RequestContext(exchange.head, exchange.receive, exchange.send, exchange.request_id, caller, who.login)

    async def session(self, head: Head, principal: str) -> Session:
        if head.session is None:
            raise BadRequest(errors.INVALID_REQUEST, "Bad Request: Missing session ID", status=400)
        if head.protocol is not None and head.protocol.decode("latin-1") not in HANDSHAKE_VERSIONS:
            raise BadRequest(
                errors.INVALID_REQUEST,
                f"Bad Request: Unsupported protocol version: "
                f"{head.protocol.decode('latin-1')}; supported: {', '.join(HANDSHAKE_VERSIONS)}",
                status=400,
            )
        session = await self.sessions.get(head.session.decode("latin-1"), principal)
        if session is None:
            raise BadRequest(errors.INVALID_REQUEST, "Session not found", status=404)
        return session

    # --- GET and DELETE ---------------------------------------------------------------------------------------
    async def get(self, exchange: Exchange, who: Who) -> None:
        if EVENT_STREAM not in exchange.head.accept:
            raise BadRequest(errors.INVALID_REQUEST, "Not Acceptable: Client must accept text/event-stream", status=406)
        session = await self.session(exchange.head, who.owner)
        queue = self.get_streams.open(session.id)
        if queue is None:
            raise BadRequest(errors.INVALID_REQUEST, "Conflict: Only one SSE stream is allowed per session", status=409)
        await self.sessions.hold_stream(session, True)
        try:
            await self._serve_stream(exchange, queue)
        finally:
            self.get_streams.release(session.id, queue)
            await self.sessions.hold_stream(session, False)

    async def _serve_stream(self, exchange: Exchange, queue: "asyncio.Queue[bytes]") -> None:
        await exchange.receive()  # the empty body of the GET; the next receive() completes when the client goes away
        client_gone: asyncio.Future[Any] = exchange.disconnected()
        try:
            await exchange.start_events()
            while True:
                getter: asyncio.Future[Any] = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, client_gone}, timeout=self.settings.keepalive_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if client_gone in done:
                    getter.cancel()
                    return
                if getter not in done:
                    getter.cancel()
                    await exchange.keepalive()
                    continue
                data = getter.result()
                if not data:  # the session ended
                    await exchange.end_events()
                    return
                await exchange.event(data)
        finally:
            client_gone.cancel()

    async def delete(self, exchange: Exchange, who: Who) -> None:
        session = await self.session(exchange.head, who.owner)
        await self.sessions.delete(session)
        self.get_streams.close(session.id)
        logger.info("session %s… closed by the client", session.id[:8])
        await exchange.respond(200, b"")


def _code(exc: BaseException) -> int:
    """The JSON-RPC error code the client gets for an exception out of a handler (see __call__)."""
    if isinstance(exc, BadRequest):
        return exc.code
    if isinstance(exc, asyncio.CancelledError):  # the client went away
        return errors.CANCELLED
    if isinstance(exc, RedisError | ConnectionError):
        return errors.SERVICE_UNAVAILABLE
    return errors.INTERNAL_ERROR
