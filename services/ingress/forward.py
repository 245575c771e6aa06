"""A request that runs at an upstream: routed, enqueued, then answered from what the worker sends back.

The reply goes back as JSON, or as an event stream when the upstream sends notifications or requests before
its result; a request the upstream sends is given an id that routes the client's answer to the worker running
the call.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from services.ingress.callers import NO_LOGS
from services.ingress.calls import Calls, Pending, ReplicaFull
from services.ingress.http import EVENT_STREAM, RequestContext
from services.ingress.notices import Notices
from services.ingress.routing import Target, route
from services.ingress.telemetry import QUEUE_FULL, REPLICA_FULL, CallSpan, Telemetry
from shared import errors, streams
from shared.catalog import Catalog
from shared.messages import Answer, Call, CallReply, CancelCall, ReplyKind
from shared.protocol import REQUIRES
from shared.valkey import Outbox

LEVELS = {
    name: n for n, name in enumerate(("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"))
}


def response(request_id: bytes, result: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":' + request_id + b',"result":' + result + b"}"


def error(request_id: bytes, code: int, message: str, data: Any = None) -> bytes:
    return b'{"jsonrpc":"2.0","id":' + request_id + b',"error":' + errors.error_body(code, message, data) + b"}"


@dataclass(slots=True)
class Flight:
    """One call in flight from this replica, as the request waiting for it sees it."""

    ctx: RequestContext
    method: str
    pending: Pending
    key: bytes
    client_gone: "asyncio.Future[Any] | None"  # a per-request client cancels by going away
    span: CallSpan
    pending_id: bytes = b""  # the call_id the replies come under
    streaming: bool | None = None  # None until the first message before the result decides it
    last: CallReply | None = None  # the final reply, once it came: what the call counts as (telemetry.py)

    def final(self, reply: CallReply) -> bytes:
        request_id = self.ctx.request_id
        if reply.kind is ReplyKind.ERROR:
            return b'{"jsonrpc":"2.0","id":' + request_id + b',"error":' + reply.body + b"}"
        return response(request_id, self.ctx.caller.result(self.method, reply.body))


class Forwarder:
    def __init__(self, calls: Calls, outbox: Outbox, replica: str, call_timeout: float, telemetry: Telemetry) -> None:
        self.calls = calls
        self.outbox = outbox
        self.replica = replica.encode()
        self.call_timeout = call_timeout
        self.telemetry = telemetry
        self.notices = Notices(calls, outbox, replica, call_timeout)

    async def forward(self, ctx: RequestContext, catalog: Catalog, method: str, params: Any) -> None:
        target = route(catalog, method, ctx.caller.upstream_params(params))
        try:
            flight = await self.submit(ctx, method, target, params)
        except errors.RetryLater as exc:
            retry_after = [(b"retry-after", b"%d" % max(1, round(exc.retry_after)))]
            # 503: this replica takes nothing now (it drains), so a load balancer may try another one
            status = 503 if isinstance(exc, errors.ServiceUnavailable) else 200
            await ctx.respond(status, error(ctx.request_id, exc.code, exc.message, exc.data), retry_after)
            return
        try:
            reply = await self.outcome(flight)
            await self.finish(flight, flight.final(reply))
        finally:
            self.close(flight)

    async def submit(self, ctx: RequestContext, method: str, target: Target, params: Any = None) -> Flight:
        """Enqueue the call (RetryLater when its queue is full); `close` the flight when done with it.

        `params` are the request's as the agent sent them: the name it called and its trace context. Every call
        submitted here is counted once, when it is refused here or when its flight is closed (telemetry.py).
        """
        caller = ctx.caller
        call_id = self.calls.new_call_id()
        key = caller.call_key(ctx.request_id, self.replica, call_id)
        span = self.telemetry.begin(ctx.head, caller, method, params, target.server, target.name)
        ctx.routed = True
        call = Call(
            call_id=call_id,
            replica=self.replica,
            session=caller.session_id,
            principal=caller.principal.encode(),
            server=target.server.encode(),
            method=method.encode(),
            params=target.params,
            deadline_ms=int((time.time() + self.call_timeout) * 1000),
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
        return Flight(ctx, method, pending, key, client_gone, span, call_id)

    def close(self, flight: Flight) -> None:
        self.calls.done(flight.pending_id)
        if flight.client_gone is not None:
            flight.client_gone.cancel()
        self.telemetry.finished(flight.span, flight.last)

    async def _next(self, flight: Flight) -> CallReply:
        if flight.client_gone is None:
            return await flight.pending.next()
        nxt = asyncio.ensure_future(flight.pending.next())
        await asyncio.wait({nxt, flight.client_gone}, return_when=asyncio.FIRST_COMPLETED)
        if not nxt.done():  # the client went away: cancel the call, and still wait for its one outcome
            self.cancel(CancelCall(key=flight.key.decode(), reason="the client closed the request"))
            return await nxt
        return nxt.result()

    async def outcome(self, flight: Flight) -> CallReply:
        """The call's final reply. What the upstream sends before it is relayed on the way, as an event stream
        (started at the first such message) when the client accepts one."""
        ctx = flight.ctx
        reply = await self._next(flight)
        while not reply.final:
            if flight.streaming is None:
                flight.streaming = ctx.head.accepts(EVENT_STREAM)
                if flight.streaming:
                    await ctx.start_events()
            data = self._relayed(ctx, reply, flight.streaming)
            if data is not None and flight.streaming:
                await ctx.event(data)
                if reply.kind is ReplyKind.NOTIFICATION:
                    self.telemetry.notified(data)
            reply = await self._next(flight)
        flight.last = reply
        return reply

    async def finish(self, flight: Flight, message: bytes) -> None:
        """The response to the request: the last event of its stream if one was started, else plain JSON."""
        if flight.streaming:
            await flight.ctx.event(message, more=False)
        else:
            await flight.ctx.respond(200, message)

    def _relayed(self, ctx: RequestContext, reply: CallReply, streaming: bool) -> bytes | None:
        caller = ctx.caller
        if reply.kind is ReplyKind.NOTIFICATION:
            if caller.level and b'"notifications/message"' in reply.body:
                if caller.level == NO_LOGS:
                    return None
                level = orjson.loads(reply.body).get("params", {}).get("level")
                if LEVELS.get(level, 99) < LEVELS.get(caller.level, 0):
                    return None
            return reply.body
        # a server->client request: the client answers it with the id muster gives it here
        method = orjson.loads(reply.body).get("method", "")
        refusal = caller.cannot_ask(streaming, REQUIRES.get(method))
        if refusal is not None:
            self.answer(reply.ref, caller.session_id, b'"error":' + errors.error_body(errors.METHOD_NOT_FOUND, refusal))
            return None
        return b'{"jsonrpc":"2.0","id":' + orjson.dumps(reply.ref.decode()) + b"," + reply.body[1:]

    def answer(self, ref: bytes, session: bytes, member: bytes) -> None:
        """Pass the client's answer to a relayed request to the worker whose call sent it."""
        answer = Answer(ref, session, member)
        self.outbox.append(streams.inbox(answer.worker), streams.INBOX_MAXLEN, answer.fields())

    def cancel(self, cancel: CancelCall) -> None:
        self.outbox.publish(streams.CONTROL, cancel)
