"""MCP Streamable HTTP: POST, GET and DELETE of the endpoint, for the handshake protocols (2024-11-05 to
2025-11-25, a session per client) and the per-request protocol (2026-07-28, no session).

Each request is parsed once; anything wrong with it becomes a BadRequest, answered here with its JSON-RPC
error and HTTP status.
"""

import asyncio
import logging
from typing import Any

import orjson
from redis.exceptions import RedisError

from services.ingress.config import IngressSettings
from services.ingress.envelope import is_modern, open_envelope
from services.ingress.events import Listeners
from services.ingress.http import (
    EVENT_STREAM,
    JSON,
    Allow,
    Head,
    Receive,
    Send,
    TooLarge,
    read_body,
    respond,
    respond_text,
    send_event,
    start_events,
)
from services.ingress.methods import CAPABILITIES, SERVER_INFO, VERSIONS, Methods, error, response
from services.ingress.routing import BadRequest
from services.ingress.sessions import Session, Sessions
from shared import errors

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
ACCEPTED: list[dict[str, Any]] = [
    {"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]},
    {"type": "http.response.body", "body": b""},
]


class Mcp:
    def __init__(self, settings: IngressSettings, sessions: Sessions, methods: Methods, listeners: Listeners) -> None:
        self.settings = settings
        self.sessions = sessions
        self.methods = methods
        self.listeners = listeners
        self.hosts = Allow(settings.allowed_hosts)
        self.origins = Allow(settings.allowed_origins)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        head = Head(scope)
        if head.host and not self.hosts(head.host):
            await respond_text(send, 421, f"Invalid Host header: {head.host.decode('latin-1')}")
            return
        if head.origin is not None and not self.origins(head.origin):
            await respond_text(send, 403, f"Invalid Origin header: {head.origin.decode('latin-1')}")
            return
        rid = b"null"
        try:
            if head.method == "POST":
                await self.post(head, receive, send)
            elif head.method == "GET":
                await self.get(head, receive, send)
            elif head.method == "DELETE":
                await self.delete(head, send)
            else:
                await respond_text(send, 405, "Method Not Allowed", [(b"allow", b"GET, POST, DELETE")])
        except BadRequest as exc:
            await respond(send, exc.status, error(rid, exc.code, exc.message, exc.data))
        except (RedisError, ConnectionError) as exc:  # Valkey unreachable, through redis-py or the hot-path connection
            logger.error("valkey unavailable: %s", exc)
            body = error(
                rid, errors.SERVICE_UNAVAILABLE, "muster cannot reach its queue; retry shortly", {"retryAfter": 1}
            )
            await respond(send, 503, body, headers=[(b"retry-after", b"1")])

    # --- POST ----------------------------------------------------------------------------------------------
    async def post(self, head: Head, receive: Receive, send: Send) -> None:
        if head.content_type.split(b";", 1)[0].strip().lower() != JSON:
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
            body = await read_body(receive, limit)
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
        has_id = "id" in message
        request_id = message.get("id")
        if has_id and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
            raise BadRequest(errors.INVALID_REQUEST, "Invalid Request: id must be a string or an integer", status=400)
        rid = orjson.dumps(request_id) if has_id else b"null"
        try:
            await self.dispatch(head, message, rid, receive, send)
        except BadRequest as exc:  # answered with the request's own id
            await respond(send, exc.status, error(rid, exc.code, exc.message, exc.data))

    async def dispatch(self, head: Head, message: dict[str, Any], rid: bytes, receive: Receive, send: Send) -> None:
        has_id = "id" in message
        method = message.get("method")
        principal = ANONYMOUS
        if method is None:
            if not (has_id and ("result" in message or "error" in message)):
                raise BadRequest(errors.INVALID_REQUEST, "Invalid Request: no method", status=400)
            await self.client_response(head, message, principal, send)
        elif not isinstance(method, str):
            raise BadRequest(errors.INVALID_REQUEST, "Invalid Request: method must be a string", status=400)
        elif is_modern(head, method):
            await self.modern(head, message, method, rid, principal, receive, send)
        elif method == "initialize" and has_id:
            await self.initialize(rid, message.get("params"), principal, send)
        else:
            session = await self.session(head, principal)
            if has_id:
                await self.methods.request(head, session, rid, method, message.get("params"), receive, send)
            else:
                await self.methods.notification(session, method, message.get("params"))
                await _accepted(send)

    async def session(self, head: Head, principal: str) -> Session:
        if head.session is None:
            raise BadRequest(errors.INVALID_REQUEST, "Bad Request: Missing session ID", status=400)
        if head.protocol is not None and head.protocol.decode("latin-1") not in VERSIONS:
            raise BadRequest(
                errors.INVALID_REQUEST,
                f"Bad Request: Unsupported protocol version: "
                f"{head.protocol.decode('latin-1')}; supported: {', '.join(VERSIONS)}",
                status=400,
            )
        session = await self.sessions.get(head.session.decode("latin-1"), principal)
        if session is None:
            raise BadRequest(errors.INVALID_REQUEST, "Session not found", status=404)
        return session

    async def initialize(self, rid: bytes, params: Any, principal: str, send: Send) -> None:
        if not isinstance(params, dict) or not isinstance(params.get("protocolVersion"), str):
            raise BadRequest(errors.INVALID_PARAMS, "Invalid params: initialize requires params.protocolVersion")
        capabilities = params.get("capabilities") or {}
        client = params.get("clientInfo") or {}
        if not isinstance(capabilities, dict) or not isinstance(client, dict):
            raise BadRequest(errors.INVALID_PARAMS, "Invalid params: capabilities and clientInfo must be objects")
        version = params["protocolVersion"] if params["protocolVersion"] in VERSIONS else VERSIONS[0]
        session = await self.sessions.create(version, capabilities, principal, client)
        result = orjson.dumps({"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO})
        logger.info("session %s… opened by %s (%s)", session.id[:8], client.get("name", "?"), version)
        await respond(send, 200, response(rid, result), headers=[(b"mcp-session-id", session.id.encode())])

    async def modern(
        self, head: Head, message: dict[str, Any], method: str, rid: bytes, principal: str, receive: Receive, send: Send
    ) -> None:
        if "id" not in message:  # no client notification means anything on this wire
            await _accepted(send)
            return
        context = open_envelope(head, message, principal)
        if method == "server/discover":
            await respond(send, 200, response(rid, self.methods.discover()))
        else:
            await self.methods.request(head, context, rid, method, message.get("params"), receive, send)

    async def client_response(self, head: Head, message: dict[str, Any], principal: str, send: Send) -> None:
        """The client answers a request an upstream sent during a call: pass it to the worker running that call."""
        session = await self.session(head, principal)
        ref = message["id"]
        if isinstance(ref, str) and "/" in ref:
            member = (
                b'"result":' + orjson.dumps(message["result"])
                if "result" in message
                else b'"error":' + orjson.dumps(message["error"])
            )
            self.methods.answer(ref.encode(), session.id.encode(), member)
        await _accepted(send)

    # --- GET and DELETE ---------------------------------------------------------------------------------------
    async def get(self, head: Head, receive: Receive, send: Send) -> None:
        if EVENT_STREAM not in head.accept:
            raise BadRequest(errors.INVALID_REQUEST, "Not Acceptable: Client must accept text/event-stream", status=406)
        session = await self.session(head, ANONYMOUS)
        queue = self.listeners.open(session.id)
        if queue is None:
            raise BadRequest(errors.INVALID_REQUEST, "Conflict: Only one SSE stream is allowed per session", status=409)
        await self.sessions.hold_stream(session, True)
        try:
            await self._serve_stream(queue, receive, send)
        finally:
            self.listeners.release(session.id, queue)
            await self.sessions.hold_stream(session, False)

    async def _serve_stream(self, queue: "asyncio.Queue[bytes]", receive: Receive, send: Send) -> None:
        await receive()  # the empty body of the GET; the next receive() completes when the client goes away
        watcher = asyncio.ensure_future(receive())
        try:
            await start_events(send)
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, watcher}, timeout=self.settings.keepalive_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if watcher in done:
                    getter.cancel()
                    return
                if getter not in done:
                    getter.cancel()
                    await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                    continue
                data = getter.result()
                if not data:  # the session ended
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                await send_event(send, data)
        finally:
            watcher.cancel()

    async def delete(self, head: Head, send: Send) -> None:
        session = await self.session(head, ANONYMOUS)
        await self.sessions.delete(session)
        self.listeners.close(session.id)
        logger.info("session %s… closed by the client", session.id[:8])
        await respond(send, 200, b"")


async def _accepted(send: Send) -> None:
    for message in ACCEPTED:
        await send(message)
