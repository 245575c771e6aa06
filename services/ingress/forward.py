"""A request that runs at an upstream: routed, enqueued, then answered from what the worker sends back.

The reply goes back as JSON, or as an event stream when the upstream sends notifications or requests before
its result (events.py: with ids, resumable). A request the upstream sends is given an id that routes the
client's answer to the worker running the call; a per-request (2026-07-28) client is asked with an
input_required result instead (inputs.py). Results and errors travel as the bytes the upstream sent.

The path is in pieces so that a meta-tool's inner call can use them too (meta.py): `submit` enqueues and returns
the Flight, `outcome` relays what comes before the final reply, `finish` answers, `close` counts the call and
lets go of it (telemetry.py). `forward` is route + those.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from services.ingress.callers import NO_LOGS
from services.ingress.calls import Calls, Pending, ReplicaFull
from services.ingress.events import EventStream
from services.ingress.http import EVENT_STREAM, Part, RequestContext
from services.ingress.notices import Notices
from services.ingress.routing import Target, route
from services.ingress.sessions import Sessions
from services.ingress.tapes import Tapes
from services.ingress.telemetry import QUEUE_FULL, REPLICA_FULL, CallSpan, Telemetry
from shared import errors, rawjson, streams
from shared.catalog import Catalog
from shared.messages import Answer, Call, CallReply, CancelCall, ReplyKind
from shared.protocol import REQUIRES
from shared.rawjson import Document
from shared.valkey import Outbox

LEVELS = {
    name: n for n, name in enumerate(("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"))
}
_LOG = b'"notifications/message"'


def response(request_id: bytes, result: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":' + request_id + b',"result":' + result + b"}"


def method_of(body: bytes) -> str:
    """The method of a request the upstream sent (as relayed: its bytes without id)."""
    try:
        method = rawjson.loads(body).get("method")
    except (rawjson.Malformed, AttributeError):
        return ""
    return method if isinstance(method, str) else ""


def hidden(level: str, notification: bytes) -> bool:
    """A log message below the level the client asked for (or any, for a client that asked for none)."""
    if not level or _LOG not in notification:
        return False
    if level == NO_LOGS:
        return True
    try:
        params = rawjson.loads(notification).get("params")
    except (rawjson.Malformed, AttributeError):
        return False
    logged = params.get("level") if isinstance(params, dict) else None
    return LEVELS.get(logged if isinstance(logged, str) else "", 99) < LEVELS.get(level, 0)


def final(ctx: RequestContext, method: str, reply: CallReply) -> tuple[Part, ...]:
    """The response to the request, in parts that are never joined into a copy of the upstream's body."""
    head = b'{"jsonrpc":"2.0","id":' + ctx.request_id
    if reply.kind is ReplyKind.ERROR:
        return head + b',"error":', reply.body, b"}"
    return head + b',"result":', *ctx.caller.result_parts(method, reply.body), b"}"


@dataclass(slots=True)
class Flight:
    """One call in flight from this replica, as the request waiting for it sees it."""

    ctx: RequestContext
    method: str
    pending: Pending
    call_id: bytes  # the call_id the replies come under
    key: bytes
    deadline: float  # wall clock
    client_gone: "asyncio.Future[Any] | None"  # a per-request client cancels by going away
    span: CallSpan
    streaming: bool | None = None  # None until the first message before the result decides it
    events: EventStream | None = None  # the request's event stream, once started
    last: CallReply | None = None  # the final reply, once it came: what the call counts as (telemetry.py)
    # A per-request client may be asked for input with an input_required result (forward's own calls; a
    # meta-tool's inner call is not: its retry could not be wrapped as the meta-tool's result).
    parkable: bool = False
    parked: bool = False  # the call goes on without its request (it waits for a per-request client's input)

    def final(self, reply: CallReply) -> tuple[Part, ...]:
        return final(self.ctx, self.method, reply)


class Forwarder:
    def __init__(
        self,
        calls: Calls,
        outbox: Outbox,
        tapes: Tapes,
        sessions: Sessions,
        replica: str,
        call_timeout: float,
        telemetry: Telemetry,
    ) -> None:
        self.calls = calls
        self.outbox = outbox
        self.tapes = tapes
        self.sessions = sessions
        self.replica = replica.encode()
        self.call_timeout = call_timeout
        self.telemetry = telemetry
        self.notices = Notices(calls, outbox, replica, call_timeout)
        self.inputs: Any = None  # inputs.Inputs, which is built with this Forwarder

    async def forward(self, ctx: RequestContext, catalog: Catalog, method: str, params: Document | None) -> None:
        caller = ctx.caller
        answering = params is not None and isinstance(params.value, dict) and "requestState" in params.value
        if caller.asks_by_result and answering:
            assert params is not None
            await self.inputs.resume(ctx, method, params)
            return
        target = route(catalog, method, caller.upstream_params(params))
        # RetryLater: answered by the endpoint with its retry hint
        flight = await self.submit(ctx, method, target, params.value if params is not None else None)
        flight.parkable = True
        try:
            reply = await self.outcome(flight)
            if not flight.parked:
                await self.finish(flight, flight.final(reply))
        finally:
            self.close(flight)

    async def submit(self, ctx: RequestContext, method: str, target: Target, params: Any = None) -> Flight:
        """Enqueue the call (RetryLater when its queue is full); `close` the flight when done with it.

        `params` are the request's as the agent sent them (decoded): the name it called and its trace context.
        Every call submitted here is counted once, when it is refused here or when its flight is closed.
        """
        caller = ctx.caller
        call_id = self.calls.new_call_id()
        key = caller.call_key(ctx.request_id, self.replica, call_id)
        span = self.telemetry.begin(ctx.head, caller, method, params, target.server, target.name)
        ctx.routed = True
        deadline = time.time() + self.call_timeout
        call = Call(
            call_id=call_id,
            replica=self.replica,
            session=caller.session_id,
            principal=caller.principal.encode(),
            server=target.server.encode(),
            method=method.encode(),
            params=target.params,
            deadline_ms=int(deadline * 1000),
            safe=target.safe,
            key=key,
            login=ctx.login,
            traceparent=span.trace.header(),
            target=target.name.encode(),
        )
        try:
            pending = await self.calls.submit(call)
        except errors.RetryLater as exc:
            draining = isinstance(exc, errors.ServiceUnavailable)  # not backpressure: this replica is stopping
            reason = None if draining else REPLICA_FULL if isinstance(exc, ReplicaFull) else QUEUE_FULL
            self.telemetry.refused(span, exc, reason)
            raise
        except (RedisError, ConnectionError) as exc:  # the endpoint answers; the outcome is counted here
            self.telemetry.refused(span, errors.ServiceUnavailable(str(exc), 1), None)
            raise
        client_gone = ctx.disconnected() if caller.cancels_by_disconnect else None
        return Flight(ctx, method, pending, call_id, key, deadline, client_gone, span)

    def close(self, flight: Flight) -> None:
        """Done with the flight's request. A parked flight's call goes on: its park task closes it at the end."""
        if flight.client_gone is not None:
            flight.client_gone.cancel()
            flight.client_gone = None
        if flight.parked:
            return
        self.calls.done(flight.call_id)
        self.telemetry.finished(flight.span, flight.last)

    async def next(self, flight: Flight) -> CallReply:
        if flight.client_gone is None:
            return await flight.pending.next()
        nxt = asyncio.ensure_future(flight.pending.next())
        await asyncio.wait({nxt, flight.client_gone}, return_when=asyncio.FIRST_COMPLETED)
        if not nxt.done():  # the client went away: cancel the call, and still wait for its one outcome
            self.cancel(CancelCall(key=flight.key.decode(), reason="the client closed the request"))
            flight.client_gone = None
            return await nxt
        return nxt.result()

    async def outcome(self, flight: Flight) -> CallReply:
        """The call's final reply. What the upstream sends before it is relayed on the way, as an event stream
        (started at the first such message, with ids and a tape: events.py) when the client accepts one.

        A parkable flight of a per-request client that the upstream asks for input returns with `flight.parked`
        set: the request was answered with input_required (inputs.py) and the reply returned is that request."""
        ctx = flight.ctx
        reply = await self.next(flight)
        while not reply.final:
            if flight.streaming is None:
                flight.streaming = ctx.head.accepts(EVENT_STREAM)
                if flight.streaming:
                    lifetime = flight.deadline - time.time() + self.tapes.keep
                    flight.events = await EventStream.open(ctx, self.tapes, b"p", ctx.caller.session_id, lifetime)
            if reply.kind is ReplyKind.REQUEST and ctx.caller.asks_by_result and flight.parkable:
                if await self.inputs.ask(flight, reply, flight.events):
                    return reply
            else:
                data = self.relayed(ctx, reply, bool(flight.streaming))
                if data is not None and flight.events is not None:
                    await flight.events.send(data)
                    if reply.kind is ReplyKind.NOTIFICATION:
                        self.telemetry.notified(data)
            reply = await self.next(flight)
        flight.last = reply
        return reply

    async def finish(self, flight: Flight, message: bytes | tuple[Part, ...]) -> None:
        """The response to the request: the last event of its stream if one was started, else plain JSON."""
        if flight.events is not None:
            await flight.events.end(message if isinstance(message, bytes) else b"".join(message))
        elif isinstance(message, bytes):
            await flight.ctx.respond(200, message)
        else:
            await flight.ctx.respond_parts(200, message)

    def relayed(self, ctx: RequestContext, reply: CallReply, streaming: bool) -> bytes | None:
        """What the client gets of one thing the upstream sent during the call, if anything."""
        caller = ctx.caller
        if reply.kind is ReplyKind.NOTIFICATION:
            return None if hidden(caller.level, reply.body) else reply.body
        # a server->client request: the client answers it with the id muster gives it here
        method = method_of(reply.body)
        refusal = caller.cannot_ask(streaming, REQUIRES.get(method), method)
        if refusal is not None:
            self.refuse(reply.ref, caller.session_id, refusal)
            return None
        self.sessions.ask(caller.session_id, reply.ref)
        return b'{"jsonrpc":"2.0","id":' + orjson.dumps(reply.ref.decode()) + b"," + reply.body[1:]

    def refuse(self, ref: bytes, session: bytes, why: str) -> None:
        """Answer a relayed request in the client's place: it cannot be asked."""
        self.answer(ref, session, b'"error":' + errors.MethodNotFound(why).body())

    def answer(self, ref: bytes, session: bytes, member: bytes) -> None:
        """Pass the client's answer to a relayed request to the worker whose call sent it."""
        answer = Answer(ref, session, member)
        self.outbox.append(streams.inbox(answer.worker), streams.INBOX_MAXLEN, answer.fields())

    def cancel(self, cancel: CancelCall) -> None:
        self.outbox.publish(streams.CONTROL, cancel)
