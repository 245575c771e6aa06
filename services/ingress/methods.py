"""What each MCP method does at the ingress: answered from the catalog view, or sent through the queue.

A queued call's reply goes back as JSON, or as an event stream when the upstream sends notifications or
requests before its result; a request the upstream sends is given an id that routes the client's answer to
the worker running the call.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson

from services.ingress.calls import Calls, Pending
from services.ingress.config import IngressSettings
from services.ingress.envelope import NO_LOGS, strip
from services.ingress.events import Catalog
from services.ingress.http import EVENT_STREAM, Head, Receive, Send, respond, send_event, start_events
from services.ingress.routing import BadRequest, route
from services.ingress.sessions import Session, Sessions
from shared import errors, streams
from shared.messages import Answer, Call, Control, Reply, ReplyKind
from shared.valkey import Outbox

VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
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
    }
)
SUBSCRIPTIONS = ("resources/subscribe", "resources/unsubscribe")
LEVELS = {
    name: n for n, name in enumerate(("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"))
}
# Which client capability a server->client request needs.
REQUIRES = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}


def response(request_id: bytes, result: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":' + request_id + b',"result":' + result + b"}"


def error(request_id: bytes, code: int, message: str, data: Any = None) -> bytes:
    return b'{"jsonrpc":"2.0","id":' + request_id + b',"error":' + errors.error_body(code, message, data) + b"}"


# 2026-07-28 results name their kind, and cacheable ones say how long they may be cached; results from an
# upstream in a handshake-era session do neither.
_COMPLETE = b'{"resultType":"complete"'
_CACHEABLE = b'{"resultType":"complete","ttlMs":0,"cacheScope":"private"'
CACHEABLE = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list", "resources/read"})


def _complete(result: bytes, method: str) -> bytes:
    head = _CACHEABLE if method in CACHEABLE else _COMPLETE
    return head + (b"," + result[1:] if result != b"{}" else b"}")


@dataclass(slots=True)
class Flight:
    """One call in flight from this replica, as the request waiting for it sees it."""

    session: Session
    rid: bytes  # the client's request id, as JSON
    method: str
    pending: Pending
    key: bytes
    watcher: "asyncio.Future[Any] | None"  # a per-request client's disconnect

    def final(self, reply: Reply) -> bytes:
        if reply.kind is ReplyKind.ERROR:
            return b'{"jsonrpc":"2.0","id":' + self.rid + b',"error":' + reply.body + b"}"
        return response(self.rid, reply.body if self.session.id else _complete(reply.body, self.method))


class Methods:
    def __init__(self, settings: IngressSettings, sessions: Sessions, calls: Calls, catalog: Catalog) -> None:
        self.settings = settings
        self.sessions = sessions
        self.calls = calls
        self.outbox: Outbox = calls.outbox
        self.catalog = catalog
        self.replica = settings.replica_id.encode()

    def discover(self) -> bytes:
        return orjson.dumps(
            {
                "supportedVersions": ["2026-07-28", *VERSIONS],
                "capabilities": CAPABILITIES,
                "resultType": "complete",
                "_meta": {"io.modelcontextprotocol/serverInfo": SERVER_INFO},
            }
        )

    def listing(self, method: str) -> bytes | None:
        view = self.catalog.view
        if method == "tools/list":
            return b'{"tools":' + view.tools_json + b"}"
        if method == "resources/list":
            return b'{"resources":' + view.resources_json + b"}"
        if method == "resources/templates/list":
            return b'{"resourceTemplates":' + view.templates_json + b"}"
        if method == "prompts/list":
            return b'{"prompts":' + view.prompts_json + b"}"
        if method == "ping":
            return b"{}"
        return None

    async def request(
        self, head: Head, session: Session, rid: bytes, method: str, params: Any, receive: Receive, send: Send
    ) -> None:
        result = self.listing(method)
        if result is None:
            if method in QUEUED:
                await self.call(head, session, rid, method, params, receive, send)
                return
            if method in SUBSCRIPTIONS and session.id:
                self.subscription(session, method == "resources/subscribe", params)
                result = b"{}"
            elif method == "logging/setLevel" and session.id:
                level = params.get("level") if isinstance(params, dict) else None
                if level not in LEVELS:
                    raise BadRequest(errors.INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(LEVELS)}")
                await self.sessions.set_level(session, level)
                result = b"{}"
            else:
                raise BadRequest(
                    errors.METHOD_NOT_FOUND, f"Method not found: {method}", status=404 if not session.id else 200
                )
        await respond(send, 200, response(rid, result if session.id else _complete(result, method)))

    async def notification(self, session: Session, method: str, params: Any) -> None:
        if method == "notifications/cancelled" and isinstance(params, dict) and "requestId" in params:
            key = session.id + " " + orjson.dumps(params["requestId"]).decode()
            self._control(Control(kind="cancel", key=key, reason=str(params.get("reason") or "")))

    def _control(self, control: Control) -> None:
        self.outbox.publish(streams.CONTROL, control)

    def answer(self, ref: bytes, session: bytes, member: bytes) -> None:
        """Pass the client's answer to a relayed request to the worker whose call sent it."""
        worker = ref.rsplit(b"/", 1)[0].decode()
        self.outbox.post(
            b"XADD", streams.inbox(worker), b"MAXLEN", b"~", 10_000, b"*", *Answer(ref, session, member).fields()
        )

    # --- calls ------------------------------------------------------------------------------------------------
    async def call(
        self, head: Head, session: Session, rid: bytes, method: str, params: Any, receive: Receive, send: Send
    ) -> None:
        target = route(self.catalog.view, method, strip(params) if not session.id else params)
        call_rid = self.calls.new_rid()
        # A session names its calls by request id, which is what notifications/cancelled names; a per-request
        # client has no session, and cancels by closing the response, so its calls get a key of their own.
        key = session.id.encode() + b" " + rid if session.id else b"~" + self.replica + b"/" + call_rid
        call = Call(
            rid=call_rid,
            replica=self.replica,
            session=session.id.encode(),
            principal=session.principal.encode(),
            server=target.server.encode(),
            method=method.encode(),
            params=target.params,
            deadline_ms=int((time.time() + self.settings.call_timeout) * 1000),
            safe=target.safe,
            key=key,
        )
        try:
            pending = await self.calls.submit(call)
        except errors.RetryLater as exc:
            await respond(
                send,
                200,
                error(rid, exc.code, exc.message, exc.data),
                headers=[(b"retry-after", b"%d" % max(1, round(exc.retry_after)))],
            )
            return
        flight = Flight(session, rid, method, pending, key, None if session.id else asyncio.ensure_future(receive()))
        try:
            reply = await self._next(flight)
            if reply.final:
                await respond(send, 200, flight.final(reply))
            else:
                reply = await self._stream(head, flight, reply, send)
        finally:
            self.calls.done(call.rid)
            if flight.watcher is not None:
                flight.watcher.cancel()

    async def _next(self, flight: "Flight") -> Reply:
        if flight.watcher is None:
            return await flight.pending.next()
        nxt = asyncio.ensure_future(flight.pending.next())
        await asyncio.wait({nxt, flight.watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not nxt.done():  # the client went away: cancel the call, and still wait for its one outcome
            self._control(Control(kind="cancel", key=flight.key.decode(), reason="the client closed the request"))
            return await nxt
        return nxt.result()

    async def _stream(self, head: Head, flight: "Flight", reply: Reply, send: Send) -> Reply:
        """Relay what the upstream sends during the call, then the result, as one event stream."""
        streaming = EVENT_STREAM in head.accept or not head.accept or b"*/*" in head.accept
        if streaming:
            await start_events(send)
        while not reply.final:
            data = self._relayed(flight.session, reply, streaming)
            if data is not None and streaming:
                await send_event(send, data)
            reply = await self._next(flight)
        if streaming:
            await send_event(send, flight.final(reply), more=False)
        else:
            await respond(send, 200, flight.final(reply))
        return reply

    def _relayed(self, session: Session, reply: Reply, streaming: bool) -> bytes | None:
        if reply.kind is ReplyKind.NOTIFY:
            if session.level and b'"notifications/message"' in reply.body:
                if session.level == NO_LOGS:
                    return None
                level = orjson.loads(reply.body).get("params", {}).get("level")
                if LEVELS.get(level, 99) < LEVELS.get(session.level, 0):
                    return None
            return reply.body
        # a server->client request: the client answers it with the id muster gives it here
        method = orjson.loads(reply.body).get("method", "")
        needed = REQUIRES.get(method)
        if not streaming or not session.id or (needed is not None and not session.supports(needed)):
            if not session.id:
                reason = "a per-request (2026-07-28) client cannot be asked; connect with the initialize handshake"
            elif not streaming:
                reason = "the client does not accept an event stream, so it cannot be asked"
            else:
                reason = f"the client did not declare the {needed} capability"
            self.answer(
                reply.ref, session.id.encode(), b'"error":' + errors.error_body(errors.METHOD_NOT_FOUND, reason)
            )
            return None
        return b'{"jsonrpc":"2.0","id":' + orjson.dumps(reply.ref.decode()) + b"," + reply.body[1:]

    def subscription(self, session: Session, subscribe: bool, params: Any) -> None:
        """Record who listens to which resource. Discovery holds one upstream subscription per resource, on a
        session it listens to, and fans each update out to every subscriber: so each arrives exactly once."""
        target = route(self.catalog.view, "resources/subscribe", params)
        server, uri = target.server, params["uri"]
        resources = self.catalog.view.servers[server].capabilities.get("resources") or {}
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
        self._control(Control(kind="subscriptions", key=server))
