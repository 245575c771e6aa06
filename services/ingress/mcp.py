"""MCP Streamable HTTP: the POST, GET and DELETE of the endpoint, for protocol versions 2024-11-05 to 2025-11-25.

A request is parsed once; what the ingress can answer from its catalog view it answers at once, the rest
becomes a Call on its server's stream. The reply goes back as JSON, or as an event stream when the upstream
sends notifications or requests before its result.
"""

import asyncio
import logging
import time
from typing import Any

import orjson
from redis.exceptions import RedisError

from services.ingress.calls import Calls, Pending
from services.ingress.config import Settings
from services.ingress.events import Catalog, Listeners
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
from services.ingress.routing import BadRequest, route
from services.ingress.sessions import Session, Sessions
from shared import errors, streams
from shared.messages import Answer, Call, Control, Reply, ReplyKind, encode

logger = logging.getLogger(__name__)

VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST = VERSIONS[0]
SERVER_INFO = {"name": "muster", "title": "muster MCP aggregator", "version": "0.1.0"}
CAPABILITIES = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "logging": {},
    "completions": {},
}
QUEUED = frozenset(
    {
        "tools/call",
        "resources/read",
        "prompts/get",
        "completion/complete",
        "resources/subscribe",
        "resources/unsubscribe",
    }
)
LEVELS = {
    name: n for n, name in enumerate(("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"))
}
# Which client capability a server->client request needs.
REQUIRES = {b"sampling/createMessage": "sampling", b"elicitation/create": "elicitation", b"roots/list": "roots"}
ANONYMOUS = "anonymous"


def _response(request_id: bytes, reply: Reply) -> bytes:
    member = b',"result":' if reply.kind is ReplyKind.RESULT else b',"error":'
    return b'{"jsonrpc":"2.0","id":' + request_id + member + reply.body + b"}"


def _error(request_id: bytes, code: int, message: str, data: Any = None) -> bytes:
    return b'{"jsonrpc":"2.0","id":' + request_id + b',"error":' + errors.error_body(code, message, data) + b"}"


class Mcp:
    def __init__(
        self, settings: Settings, sessions: Sessions, calls: Calls, catalog: Catalog, listeners: Listeners
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.calls = calls
        self.outbox = calls.outbox
        self.catalog = catalog
        self.listeners = listeners
        self.hosts = Allow(settings.allowed_hosts)
        self.origins = Allow(settings.allowed_origins)
        self.replica = settings.replica_id.encode()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        head = Head(scope)
        if head.host and not self.hosts(head.host):
            await respond_text(send, 421, f"Invalid Host header: {head.host.decode('latin-1')}")
            return
        if head.origin is not None and not self.origins(head.origin):
            await respond_text(send, 403, f"Invalid Origin header: {head.origin.decode('latin-1')}")
            return
        try:
            if head.method == "POST":
                await self.post(head, receive, send)
            elif head.method == "GET":
                await self.get(head, receive, send)
            elif head.method == "DELETE":
                await self.delete(head, send)
            else:
                await respond_text(send, 405, "Method Not Allowed", [(b"allow", b"GET, POST, DELETE")])
        except RedisError as exc:
            logger.error("valkey unavailable: %s", exc)
            await respond(
                send,
                503,
                _error(
                    b"null",
                    errors.SERVICE_UNAVAILABLE,
                    "muster cannot reach its queue; retry shortly",
                    {"retryAfter": 1},
                ),
                headers=[(b"retry-after", b"1")],
            )

    # --- POST ----------------------------------------------------------------------------------------------
    async def post(self, head: Head, receive: Receive, send: Send) -> None:
        if head.content_type.split(b";", 1)[0].strip().lower() != JSON:
            await respond(
                send,
                415,
                _error(
                    b"null", errors.INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json"
                ),
            )
            return
        if not (head.accepts(JSON) or head.accepts(EVENT_STREAM)):
            await respond(
                send,
                406,
                _error(
                    b"null",
                    errors.INVALID_REQUEST,
                    "Not Acceptable: Client must accept application/json and text/event-stream",
                ),
            )
            return
        limit = self.settings.max_body_bytes
        try:
            if head.content_length is not None and head.content_length > limit:
                raise TooLarge
            body = await read_body(receive, limit)
        except TooLarge:
            await respond(
                send, 413, _error(b"null", errors.INVALID_REQUEST, f"Payload Too Large: the limit is {limit} bytes")
            )
            return
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            await respond(send, 400, _error(b"null", errors.PARSE_ERROR, f"Parse error: {exc}"))
            return
        if isinstance(message, list):
            await respond(
                send, 400, _error(b"null", errors.INVALID_REQUEST, "Invalid Request: batches are not supported")
            )
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            await respond(
                send, 400, _error(b"null", errors.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
            )
            return
        has_id = "id" in message
        request_id = message.get("id")
        if has_id and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
            await respond(
                send, 400, _error(b"null", errors.INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
            )
            return
        rid = orjson.dumps(request_id) if has_id else b"null"
        method = message.get("method")
        if method is None:
            if has_id and ("result" in message or "error" in message):
                await self._client_response(head, message, send)
            else:
                await respond(send, 400, _error(rid, errors.INVALID_REQUEST, "Invalid Request: no method"))
            return
        if not isinstance(method, str):
            await respond(send, 400, _error(rid, errors.INVALID_REQUEST, "Invalid Request: method must be a string"))
            return
        principal = ANONYMOUS
        if method == "initialize" and has_id:
            await self.initialize(rid, message.get("params"), principal, send)
            return
        session = await self._session(head, principal, rid, send)
        if session is None:
            return
        if not has_id:
            await self.notification(session, method, message.get("params"))
            await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.request(head, session, rid, method, message.get("params"), send)

    async def _session(self, head: Head, principal: str, rid: bytes, send: Send) -> Session | None:
        if head.session is None:
            await respond(send, 400, _error(rid, errors.INVALID_REQUEST, "Bad Request: Missing session ID"))
            return None
        if head.protocol is not None and head.protocol.decode("latin-1") not in VERSIONS:
            await respond(
                send,
                400,
                _error(
                    rid,
                    errors.INVALID_REQUEST,
                    f"Bad Request: Unsupported protocol version: {head.protocol.decode('latin-1')}; "
                    f"supported: {', '.join(VERSIONS)}",
                ),
            )
            return None
        session = await self.sessions.get(head.session.decode("latin-1"), principal)
        if session is None:
            await respond(send, 404, _error(rid, errors.INVALID_REQUEST, "Session not found"))
        return session

    async def initialize(self, rid: bytes, params: Any, principal: str, send: Send) -> None:
        if not isinstance(params, dict) or not isinstance(params.get("protocolVersion"), str):
            await respond(
                send,
                200,
                _error(rid, errors.INVALID_PARAMS, "Invalid params: initialize requires params.protocolVersion"),
            )
            return
        capabilities = params.get("capabilities") or {}
        client = params.get("clientInfo") or {}
        if not isinstance(capabilities, dict) or not isinstance(client, dict):
            await respond(
                send,
                200,
                _error(rid, errors.INVALID_PARAMS, "Invalid params: capabilities and clientInfo must be objects"),
            )
            return
        version = params["protocolVersion"] if params["protocolVersion"] in VERSIONS else LATEST
        session = await self.sessions.create(version, capabilities, principal, client)
        result = orjson.dumps({"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO})
        logger.info("session %s… opened by %s (%s)", session.id[:8], client.get("name", "?"), version)
        await respond(
            send,
            200,
            b'{"jsonrpc":"2.0","id":' + rid + b',"result":' + result + b"}",
            headers=[(b"mcp-session-id", session.id.encode())],
        )

    async def notification(self, session: Session, method: str, params: Any) -> None:
        if method == "notifications/cancelled" and isinstance(params, dict) and "requestId" in params:
            key = session.id + " " + orjson.dumps(params["requestId"]).decode()
            control = Control(kind="cancel", key=key, reason=str(params.get("reason") or ""))
            await self.outbox.send(
                b"XADD",
                streams.CONTROL,
                b"MAXLEN",
                b"~",
                streams.EVENTS_MAXLEN,
                b"*",
                *[x for kv in encode(control).items() for x in kv],
            )

    async def _client_response(self, head: Head, message: dict[str, Any], send: Send) -> None:
        """The client answers a request an upstream sent during a call: pass it to the worker running that call."""
        session = await self._session(head, ANONYMOUS, b"null", send)
        if session is None:
            return
        ref = message["id"]
        if isinstance(ref, str) and "/" in ref:
            member = (
                b'"result":' + orjson.dumps(message["result"])
                if "result" in message
                else (b'"error":' + orjson.dumps(message["error"]))
            )
            self._answer(ref.encode(), session.id.encode(), member)
        await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    def _answer(self, ref: bytes, session: bytes, member: bytes) -> None:
        worker = ref.rsplit(b"/", 1)[0].decode()
        self.outbox.post(
            b"XADD", streams.inbox(worker), b"MAXLEN", b"~", 10_000, b"*", *Answer(ref, session, member).fields()
        )

    async def request(self, head: Head, session: Session, rid: bytes, method: str, params: Any, send: Send) -> None:
        view = self.catalog.view
        if method == "tools/list":
            result = b'{"tools":' + view.tools_json + b"}"
        elif method == "ping":
            result = b"{}"
        elif method == "resources/list":
            result = b'{"resources":' + view.resources_json + b"}"
        elif method == "resources/templates/list":
            result = b'{"resourceTemplates":' + view.templates_json + b"}"
        elif method == "prompts/list":
            result = b'{"prompts":' + view.prompts_json + b"}"
        elif method == "logging/setLevel":
            level = params.get("level") if isinstance(params, dict) else None
            if level not in LEVELS:
                await respond(
                    send,
                    200,
                    _error(rid, errors.INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(LEVELS)}"),
                )
                return
            await self.sessions.set_level(session, level)
            result = b"{}"
        elif method in QUEUED:
            await self.call(head, session, rid, method, params, send)
            return
        else:
            await respond(send, 200, _error(rid, errors.METHOD_NOT_FOUND, f"Method not found: {method}"))
            return
        await respond(send, 200, b'{"jsonrpc":"2.0","id":' + rid + b',"result":' + result + b"}")

    async def call(self, head: Head, session: Session, rid: bytes, method: str, params: Any, send: Send) -> None:
        try:
            target = route(self.catalog.view, method, params)
        except BadRequest as exc:
            await respond(send, 200, _error(rid, exc.code, exc.message, exc.data))
            return
        timeout = self.settings.call_timeout
        call = Call(
            rid=self.calls.new_rid(),
            replica=self.replica,
            session=session.id.encode(),
            principal=session.principal.encode(),
            server=target.server.encode(),
            method=method.encode(),
            params=target.params,
            deadline_ms=int((time.time() + timeout) * 1000),
            safe=target.safe,
            key=session.id.encode() + b" " + rid,
        )
        try:
            pending = await self.calls.submit(call)
        except errors.RetryLater as exc:
            await respond(
                send,
                200,
                _error(rid, exc.code, exc.message, exc.data),
                headers=[(b"retry-after", b"%d" % max(1, round(exc.retry_after)))],
            )
            return
        try:
            reply = await pending.next()
            if reply.final:
                await respond(send, 200, _response(rid, reply))
                return
            await self._stream(head, session, rid, pending, reply, send)
        finally:
            self.calls.done(call.rid)

    async def _stream(
        self, head: Head, session: Session, rid: bytes, pending: Pending, reply: Reply, send: Send
    ) -> None:
        """Relay what the upstream sends during the call, then the result, as one event stream."""
        streaming = EVENT_STREAM in head.accept or not head.accept or b"*/*" in head.accept
        if streaming:
            await start_events(send)
        while not reply.final:
            data = self._relayed(session, reply, streaming)
            if data is not None and streaming:
                await send_event(send, data)
            reply = await pending.next()
        if streaming:
            await send_event(send, _response(rid, reply), more=False)
        else:
            await respond(send, 200, _response(rid, reply))

    def _relayed(self, session: Session, reply: Reply, streaming: bool) -> bytes | None:
        if reply.kind is ReplyKind.NOTIFY:
            if session.level and b'"notifications/message"' in reply.body:
                level = orjson.loads(reply.body).get("params", {}).get("level")
                if LEVELS.get(level, 99) < LEVELS[session.level]:
                    return None
            return reply.body
        # a server->client request: the client answers with the id muster gives it
        message = orjson.loads(reply.body)
        needed = REQUIRES.get(message.get("method", "").encode())
        if not streaming or (needed is not None and not session.supports(needed)):
            reason = (
                "the client cannot receive requests on this call"
                if not streaming
                else (f"the client did not declare the {needed} capability")
            )
            self._answer(
                reply.ref, session.id.encode(), b'"error":' + errors.error_body(errors.METHOD_NOT_FOUND, reason)
            )
            return None
        return b'{"jsonrpc":"2.0","id":' + orjson.dumps(reply.ref.decode()) + b"," + reply.body[1:]

    # --- GET and DELETE -------------------------------------------------------------------------------------
    async def get(self, head: Head, receive: Receive, send: Send) -> None:
        if EVENT_STREAM not in head.accept:
            await respond(
                send,
                406,
                _error(b"null", errors.INVALID_REQUEST, "Not Acceptable: Client must accept text/event-stream"),
            )
            return
        session = await self._session(head, ANONYMOUS, b"null", send)
        if session is None:
            return
        queue = self.listeners.open(session.id)
        if queue is None:
            await respond(
                send,
                409,
                _error(b"null", errors.INVALID_REQUEST, "Conflict: Only one SSE stream is allowed per session"),
            )
            return
        await read_body(
            receive, self.settings.max_body_bytes
        )  # a GET has an empty body; the next receive() is the disconnect
        watcher = asyncio.ensure_future(receive())  # completes when the client goes away
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
            self.listeners.release(session.id, queue)

    async def delete(self, head: Head, send: Send) -> None:
        session = await self._session(head, ANONYMOUS, b"null", send)
        if session is None:
            return
        await self.sessions.delete(session)
        self.listeners.close(session.id)
        logger.info("session %s… closed by the client", session.id[:8])
        await respond(send, 200, b"")
