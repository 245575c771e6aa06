"""A per-request (2026-07-28) client asked for sampling, elicitation or roots in the middle of a call.

That protocol has no server->client requests: a server that needs input answers the client's request with an
input_required result naming what it needs, and the client sends the same request again with its
inputResponses and the requestState it was given. An upstream of the handshake era still sends a request in the
middle of the call and waits for its answer. muster translates: the upstream's request becomes the client's
input_required result, the client's retry becomes the answer to the upstream's request, and the retry is
answered with what the call does next (another input_required, or its outcome).

Meanwhile the call is parked on a tape (tapes.py, kind `i`): the replica that holds the call writes what the
call produces there, so the retry may arrive at any replica, which follows the tape from the requestState on.
The requestState names the tape and a place on it; it is good only for the principal and method it was given for.
"""

import logging
import time
from typing import Any

from services.ingress.calls import Calls
from services.ingress.events import EventStream, next_or_gone
from services.ingress.forward import Flight, Forwarder, final, hidden, method_of
from services.ingress.http import EVENT_STREAM, RequestContext
from services.ingress.tapes import META, Position, Tape, Tapes, seq_of
from shared import errors
from shared.lifecycle import Background
from shared.messages import CallReply, CancelCall, ReplyKind
from shared.protocol import REQUIRES
from shared.rawjson import Document

logger = logging.getLogger(__name__)


def _fields(reply: CallReply) -> list[bytes]:
    return [b"kind", reply.kind.value, b"body", reply.body, b"ref", reply.ref]


def input_required(request_id: bytes, state: bytes, seq: int, request: bytes) -> bytes:
    """The response that asks the client for one input: the upstream's request under the key `seq`."""
    return (
        b'{"jsonrpc":"2.0","id":'
        + request_id
        + b',"result":{"resultType":"input_required","inputRequests":{"%d":' % seq
        + request
        + b'},"requestState":"'
        + state
        + b'"}}'
    )


class Inputs:
    def __init__(self, forwarder: Forwarder, tapes: Tapes, calls: Calls) -> None:
        self.forwarder = forwarder
        self.tapes = tapes
        self.calls = calls
        self.background = Background()
        forwarder.inputs = self

    async def ask(self, flight: Flight, reply: CallReply, events: EventStream | None) -> bool:
        """Answers the request with an input_required result naming the upstream's request, and parks the call.
        False when the client cannot be asked this: the request is refused in its place, and the call goes on."""
        ctx, caller = flight.ctx, flight.ctx.caller
        method = method_of(reply.body)
        refusal = caller.cannot_ask(True, REQUIRES.get(method), method)
        if refusal is not None:
            self.forwarder.refuse(reply.ref, caller.session_id, refusal)
            return False
        meta = {b"principal": caller.principal.encode(), b"method": flight.method.encode(), b"key": flight.key}
        tape = self.tapes.open(b"i", meta, flight.deadline - time.time() + self.tapes.keep)
        seq = tape.append(_fields(reply))
        flight.parked = True
        self.background.spawn(self._park(flight, tape))
        body = input_required(ctx.request_id, tape.event_id(seq), seq, reply.body)
        if events is not None:
            await events.end(body)
        else:
            await ctx.respond(200, body)
        return True

    async def _park(self, flight: Flight, tape: Tape) -> None:
        """What the call produces from here on, onto its tape, to its outcome; then the flight is closed (and
        counted) as any other."""
        try:
            while True:
                reply = await flight.pending.next()
                tape.append(_fields(reply))
                if reply.final:
                    flight.last = reply
                    return
        finally:
            flight.parked = False
            self.forwarder.close(flight)
            self.tapes.finish(tape)

    async def resume(self, ctx: RequestContext, method: str, params: Document) -> None:
        """The client sent its request again with the input it was asked for."""
        caller = ctx.caller
        state = params.value.get("requestState")
        at = Position.parse(state.encode()) if isinstance(state, str) else None
        meta = await self.tapes.meta(at.tape) if at is not None and at.kind == b"i" else None
        if (
            at is None
            or meta is None
            or meta.get(b"principal") != caller.principal.encode()
            or meta.get(b"method") != method.encode()
        ):
            raise errors.InvalidParams(
                "Invalid params: requestState is not one muster gave for this request, or expired"
            )
        asked = {seq: f for seq, f in await self.tapes.entries(at.tape, META + 1, at.seq) if f.get(b"ref")}
        responses = params.child("inputResponses")
        if responses is not None and isinstance(responses.value, dict):
            for key in responses.value:
                entry = asked.get(int(key)) if key.isdigit() and len(key) < 10 else None
                answer = responses.member(key)
                if entry is not None and answer is not None:
                    self.forwarder.answer(entry[b"ref"], caller.session_id, b'"result":' + answer)
        await self._follow(ctx, method, at, meta[b"key"])

    async def _follow(self, ctx: RequestContext, method: str, at: Position, key: bytes) -> None:
        """What the parked call does next, for this request: notifications, then another question or the end."""
        retry = _Retry(self, ctx, method, at)
        gone = ctx.disconnected()
        follow = aiter(self.tapes.follow(at.tape, at.seq))
        try:
            while True:
                batch: Any = await next_or_gone(follow, gone)
                if batch is gone:  # a per-request client cancels by going away
                    self.forwarder.cancel(CancelCall(key=key.decode(), reason="the client closed the request"))
                    return
                if not batch and not await self.tapes.exists(at.tape):
                    lost = errors.DeadlineExceeded(
                        "the call waiting for this input is gone; it may or may not have run"
                    )
                    await retry.answer(lost.response(ctx.request_id))
                    return
                for _, entries in batch:
                    for entry_id, fields in entries:
                        if await retry.take(seq_of(entry_id), fields):
                            return
        finally:
            gone.cancel()

    def close(self) -> None:
        self.background.cancel()


class _Retry:
    """One retry of a request, answered from what its parked call does next."""

    def __init__(self, inputs: Inputs, ctx: RequestContext, method: str, at: Position) -> None:
        self.inputs = inputs
        self.ctx = ctx
        self.method = method
        self.at = at
        self.streaming = ctx.head.accepts(EVENT_STREAM)
        self.events: EventStream | None = None

    async def take(self, seq: int, fields: dict[bytes, bytes]) -> bool:
        """One thing the call produced; True once the request is answered."""
        caller = self.ctx.caller
        reply = CallReply(b"", ReplyKind(fields[b"kind"]), fields[b"body"], fields.get(b"ref", b""))
        if reply.final:
            await self.answer(b"".join(final(self.ctx, self.method, reply)))
            return True
        if reply.kind is ReplyKind.REQUEST:
            asked = method_of(reply.body)
            refusal = caller.cannot_ask(True, REQUIRES.get(asked), asked)
            if refusal is not None:
                self.inputs.forwarder.refuse(reply.ref, caller.session_id, refusal)
                return False
            state = b"i" + self.at.tape.encode() + b".%d" % seq
            await self.answer(input_required(self.ctx.request_id, state, seq, reply.body))
            return True
        if self.streaming and not hidden(caller.level, reply.body):
            if self.events is None:
                self.events = await EventStream.open(self.ctx, self.inputs.tapes, b"p", None, 0)
            await self.events.send(reply.body)
        return False

    async def answer(self, body: bytes) -> None:
        if self.events is not None:
            await self.events.end(body)
        else:
            await self.ctx.respond(200, body)
