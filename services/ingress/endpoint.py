"""The MCP endpoint over Streamable HTTP: POST, GET and DELETE, for the handshake protocols (2024-11-05 to
2025-11-25, a session per client) and the per-request protocol (2026-07-28, no session).

This is the transport side: each request is parsed once (values to route on, bytes to forward) and its caller
found (a session, or an envelope); what the method means is the handlers' business. Anything wrong is a
MusterError, answered here with its JSON-RPC error and HTTP status; a Valkey failure is translated here.
"""

import asyncio
import logging
import time
from typing import Any

from hiredis import ReplyError
from redis.exceptions import RedisError

from services.ingress.bearer import ANONYMOUS, Bearer, Who, deny
from services.ingress.callers import Caller, Session
from services.ingress.config import IngressSettings
from services.ingress.envelope import is_modern, open_envelope
from services.ingress.events import EventStream, missed, replay
from services.ingress.get_streams import GetStreams
from services.ingress.handlers import Handlers
from services.ingress.http import (
    EVENT_STREAM,
    JSON,
    Allow,
    ClientGone,
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
from services.ingress.sessions import Sessions
from services.ingress.tapes import Position, Tapes
from services.ingress.telemetry import Telemetry
from shared import errors
from shared.protocol import HANDSHAKE_VERSIONS
from shared.rawjson import Document, Malformed, is_integer

logger = logging.getLogger(__name__)


class Endpoint:
    def __init__(
        self,
        settings: IngressSettings,
        sessions: Sessions,
        handlers: Handlers,
        get_streams: GetStreams,
        tapes: Tapes,
        telemetry: Telemetry,
        bearer: Bearer | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.handlers = handlers
        self.get_streams = get_streams
        self.tapes = tapes
        self.telemetry = telemetry
        self.bearer = bearer  # with auth on: every request's token is checked before anything else
        self.hosts = Allow(settings.allowed_hosts)
        self.origins = Allow(settings.allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = Head(scope)
        if head.host and not self.hosts(head.host):
            await respond_text(send, 421, f"Invalid Host header: {head.host.decode('latin-1')[:256]}")
            return
        if head.origin is not None and not self.origins(head.origin):
            await respond_text(send, 403, f"Invalid Origin header: {head.origin.decode('latin-1')[:256]}")
            return
        exchange = Exchange(head, receive, send, b"null")
        try:
            await self._serve(exchange)
        except ClientGone:
            return
        except errors.MusterError as exc:  # answered with the request's own id, once it is known
            headers = exc.headers if isinstance(exc, errors.RetryLater) else []
            await exchange.respond(exc.status, exc.response(exchange.request_id), headers)

    async def _serve(self, exchange: Exchange) -> None:
        try:
            # With auth on, every request's token is checked before anything else: the principal, once.
            who = ANONYMOUS if self.bearer is None else await self.bearer.who(exchange.head)
            if isinstance(who, Denial):
                await deny(exchange.send, who)
            elif exchange.head.method == "POST":
                await self.post(exchange, who)
            elif exchange.head.method == "GET":
                await self.get(exchange, who)
            elif exchange.head.method == "DELETE":
                await self.delete(exchange, who)
            else:
                await exchange.respond_text(405, "Method Not Allowed", [(b"allow", b"GET, POST, DELETE")])
        except (RedisError, ConnectionError) as exc:  # Valkey unreachable, through redis-py or the hot-path connection
            logger.error("valkey unavailable: %s", exc)
            raise errors.ServiceUnavailable(
                "muster cannot reach its queue; retry shortly", self.settings.retry_after
            ) from exc
        except ReplyError as exc:  # Valkey answered with an error: out of memory (maxmemory, noeviction), or worse
            logger.error("valkey refused a command: %s", exc)
            raise errors.ServiceUnavailable(
                "muster's queue refused the request (it may be full); retry shortly", self.settings.retry_after
            ) from exc

    # --- POST ----------------------------------------------------------------------------------------------
    async def post(self, exchange: Exchange, who: Who) -> None:
        doc = await self._message(exchange)
        message: dict[str, Any] = doc.value
        method = message.get("method")
        has_id = "id" in message
        principal = who.owner
        if method is None:
            if not (has_id and ("result" in message or "error" in message)):
                raise errors.InvalidRequest("Invalid Request: no method")
            await self.handlers.client_response(await self.session(exchange.head, principal), doc)
            await exchange.accepted()
            return
        if not isinstance(method, str):
            raise errors.InvalidRequest("Invalid Request: method must be a string")
        params = doc.child("params")
        if is_modern(exchange.head, method):
            if not has_id:  # no client notification means anything on this wire
                await exchange.accepted()
                return
            caller = open_envelope(exchange.head, message, principal)
            await self.request(self._context(exchange, caller, who), method, params)
        elif method == "initialize" and has_id:
            started, code = time.perf_counter(), None
            try:
                await self.handlers.initialize(exchange, params, principal)
            except BaseException as exc:
                code = _code(exc)
                raise
            finally:
                self.telemetry.answered(method, None, params.value if params is not None else None, code, started)
        else:
            session = await self.session(exchange.head, principal)
            if has_id:
                await self.request(self._context(exchange, session, who), method, params)
            else:
                await self.handlers.notification(session, method, params)
                await exchange.accepted()

    async def _message(self, exchange: Exchange) -> Document:
        """The request's one JSON-RPC message, read and parsed once; its id, as sent, on the exchange."""
        head = exchange.head
        if not head.json_body:
            raise errors.InvalidRequest("Unsupported Media Type: Content-Type must be application/json", status=415)
        if not (head.accepts(JSON) or head.accepts(EVENT_STREAM)):
            raise errors.InvalidRequest(
                "Not Acceptable: Client must accept application/json and text/event-stream", status=406
            )
        limit = self.settings.max_body_bytes
        try:
            if head.content_length is not None and head.content_length > limit:
                raise TooLarge
            body = await read_body(exchange.receive, limit)
        except TooLarge:
            raise errors.InvalidRequest(f"Payload Too Large: the limit is {limit} bytes", status=413) from None
        try:
            doc = Document.parse(body)
        except Malformed as exc:
            raise errors.ParseError(f"Parse error: {exc}") from None
        if isinstance(doc.value, list):
            raise errors.InvalidRequest("Invalid Request: batches are not supported")
        if not isinstance(doc.value, dict) or doc.value.get("jsonrpc") != "2.0":
            raise errors.InvalidRequest("Invalid Request: not a JSON-RPC 2.0 message")
        request_id = doc.member("id")
        if request_id is not None:
            # a string, or an integer of any size: echoed as it came, 2**70 included
            if request_id[:1] != b'"' and not is_integer(request_id):
                raise errors.InvalidRequest("Invalid Request: id must be a string or an integer")
            exchange.request_id = request_id
        return doc

    async def request(self, ctx: RequestContext, method: str, params: Document | None) -> None:
        """A request with an id: what a routed call records is the forwarder's, the rest is recorded here."""
        started, code = time.perf_counter(), None
        try:
            await self.handlers.request(ctx, method, params)
        except BaseException as exc:
            code = _code(exc)
            raise
        finally:
            if not ctx.routed:
                value = params.value if params is not None else None
                self.telemetry.answered(method, ctx.caller, value, code, started)

    @staticmethod
    def _context(exchange: Exchange, caller: Caller, who: Who) -> RequestContext:
        return RequestContext(exchange.head, exchange.receive, exchange.send, exchange.request_id, caller, who.login)

    async def session(self, head: Head, principal: str) -> Session:
        if head.session is None:
            raise errors.InvalidRequest("Bad Request: Missing session ID")
        if head.protocol is not None and head.protocol.decode("latin-1") not in HANDSHAKE_VERSIONS:
            raise errors.InvalidRequest(
                f"Bad Request: Unsupported protocol version: "
                f"{head.protocol.decode('latin-1')[:64]}; supported: {', '.join(HANDSHAKE_VERSIONS)}"
            )
        session = await self.sessions.get(head.session.decode("latin-1"), principal)
        if session is None:
            raise errors.InvalidRequest("Session not found", status=404)
        return session

    # --- GET and DELETE ---------------------------------------------------------------------------------------
    async def get(self, exchange: Exchange, who: Who) -> None:
        if EVENT_STREAM not in exchange.head.accept:
            raise errors.InvalidRequest("Not Acceptable: Client must accept text/event-stream", status=406)
        session = await self.session(exchange.head, who.owner)
        at = Position.parse(exchange.head.last_event_id)
        if at is not None and at.kind == b"p":
            await self._resume(exchange, session, at)
            return
        queue = self.get_streams.open(session.id)
        if queue is None:
            raise errors.InvalidRequest("Conflict: Only one SSE stream is allowed per session", status=409)
        await self.sessions.hold_stream(session, True)
        try:
            await self._serve_stream(exchange, session, queue, at)
        finally:
            self.get_streams.release(session.id, queue)
            await self.sessions.hold_stream(session, False)

    async def _resume(self, exchange: Exchange, session: Session, at: Position) -> None:
        """A dropped POST stream, resumed: what it sent after the client's last event, to its end."""
        meta = await self.tapes.meta(at.tape)
        if meta is None or meta.get(b"session") != session.session_id:
            raise errors.InvalidRequest("Not Found: no stream of this session to resume at that event id", status=404)
        await exchange.receive()  # the empty body of the GET; the next receive() completes when the client goes away
        gone = exchange.disconnected()
        try:
            await exchange.start_events()
            await replay(exchange, self.tapes, at, gone)
        finally:
            gone.cancel()

    async def _serve_stream(
        self, exchange: Exchange, session: Session, queue: "asyncio.Queue[bytes]", at: Position | None
    ) -> None:
        await exchange.receive()  # the empty body of the GET; the next receive() completes when the client goes away
        client_gone: asyncio.Future[Any] = exchange.disconnected()
        await exchange.start_events()
        if at is not None and at.kind == b"g":  # what the dropped stream sent after the client's last event, first
            meta = await self.tapes.meta(at.tape)
            if meta is not None and meta.get(b"session") == session.session_id:
                await missed(exchange, self.tapes, at)
        lifetime = self.settings.session_ttl
        events = await EventStream.open(exchange, self.tapes, b"g", session.session_id, lifetime, started=True)
        try:
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
                await events.send(data)
        finally:
            events.close()
            client_gone.cancel()

    async def delete(self, exchange: Exchange, who: Who) -> None:
        session = await self.session(exchange.head, who.owner)
        await self.sessions.delete(session)
        self.get_streams.close(session.id)
        logger.info("session %s… closed by the client", session.id[:8])
        await exchange.respond(200, b"")


def _code(exc: BaseException) -> int:
    """The JSON-RPC error code the client gets for an exception out of a handler (see __call__ and _serve)."""
    if isinstance(exc, errors.MusterError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError):  # the client went away
        return errors.CANCELLED
    if isinstance(exc, RedisError | ConnectionError | ReplyError):
        return errors.SERVICE_UNAVAILABLE
    return errors.INTERNAL_ERROR
