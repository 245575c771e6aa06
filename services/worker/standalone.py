"""What an upstream sends on the GET stream of an agent session's upstream session, delivered to that agent.

- A request (sampling, elicitation, roots/list): to the stream of a call of that agent session running at that
  server, if there is one (it is most likely what the request is about), as that call's relayed request;
  otherwise to the agent's own GET stream, through the ingress replica that holds it. The agent's answer comes
  back through this worker's inbox (relays.py). When neither exists, or the agent did not declare what the
  request needs, the upstream is answered with an error at once; "at once" allows an agent that has just
  initialized the moment its client takes to open its GET stream (STREAM_GRACE), as a server directly would.
- A ping: answered here.
- A notification (logging, progress, resources/updated): to the agent's GET stream, or with none open, to a
  running call's stream. The upstream's own list_changed is discovery's to act on: it lists the server again and
  muster notifies every session.
"""

import asyncio
from typing import Any

import orjson

from services.worker.bindings import Bindings
from services.worker.relays import PONG, Relays
from services.worker.upstream import Bound, Upstream
from shared import errors, streams
from shared.messages import CallReply, ReplyKind, SessionEvent
from shared.protocol import REQUIRES
from shared.rawjson import Document
from shared.valkey import Outbox

STREAM_GRACE = 2.0  # seconds a request waits for the GET stream of an agent that has none (yet)
STREAM_POLL = 0.1

LIST_CHANGED = frozenset(
    {
        "notifications/tools/list_changed",
        "notifications/resources/list_changed",
        "notifications/prompts/list_changed",
    }
)


def unreachable(method: str, stream: bytes | None, capabilities: bytes | None) -> str | None:
    """Why a request from outside any call cannot go to the agent's GET stream, or None when it can."""
    if not stream:
        return "muster cannot reach the client: it has no call running here and no GET stream open"
    needs = REQUIRES.get(method)
    if needs is not None and needs not in orjson.loads(capabilities or b"{}"):
        return f"the client did not declare the {needs} capability"
    return None


class Standalone:
    def __init__(self, outbox: Outbox, bindings: Bindings, relays: Relays) -> None:
        self.outbox = outbox
        self.bindings = bindings
        self.relays = relays

    async def deliver(self, upstream: Upstream, bound: Bound, message: dict[str, Any], data: bytes) -> None:
        method = message.get("method")
        if "id" in message:
            request = Document(data, message)
            if method == "ping":
                self.relays.respond(bound.session, request.member("id"), PONG)
            else:
                await self._request(upstream.name, bound, request)
        elif method not in LIST_CHANGED:
            await self._notification(upstream.name, bound.agent, data)

    async def _request(self, server: str, bound: Bound, request: Document) -> None:
        """`request` keeps the upstream's bytes: its id goes back as sent, the rest on to the agent as sent."""
        agent, method, upstream_id = bound.agent, str(request.value.get("method")), request.member("id")
        body = request.rebuilt({}, frozenset({"id", "jsonrpc"}))
        running = await self.bindings.running_calls(server, agent)
        if running:
            replica, call_id = running[0]
            ref = self.relays.expect(bound.session, upstream_id, agent)
            self.outbox.reply(replica, CallReply(call_id, ReplyKind.REQUEST, body, ref))
            return
        stream, capabilities = await self._agent_stream(agent)
        why = unreachable(method, stream, capabilities)
        if why is not None or stream is None:
            error = errors.InternalError(str(why)) if not stream else errors.MethodNotFound(str(why))
            self.relays.respond(bound.session, upstream_id, b'"error":' + error.body())
            return
        ref = self.relays.expect(bound.session, upstream_id, agent)
        relayed = b'{"jsonrpc":"2.0","id":' + orjson.dumps(ref.decode()) + b"," + body[1:]
        self.outbox.reply(stream, SessionEvent(agent, relayed, ref))

    async def _agent_stream(self, agent: bytes) -> tuple[bytes | None, bytes | None]:
        """The replica holding the agent's GET stream (waiting up to STREAM_GRACE for one), and its capabilities."""
        key = streams.session(agent.decode())
        until = asyncio.get_running_loop().time() + STREAM_GRACE
        while True:
            stream, capabilities = await self.outbox.send(b"HMGET", key, b"stream", b"capabilities")
            if stream or capabilities is None or asyncio.get_running_loop().time() >= until:
                return stream, capabilities  # no capabilities: the session itself is gone
            await asyncio.sleep(STREAM_POLL)

    async def _notification(self, server: str, agent: bytes, data: bytes) -> None:
        stream = await self.outbox.send(b"HGET", streams.session(agent.decode()), b"stream")
        if stream:
            self.outbox.reply(stream, SessionEvent(agent, data))
            return
        running = await self.bindings.running_calls(server, agent)
        if running:  # the agent has no GET stream, but it has a call's stream open
            replica, call_id = running[0]
            self.outbox.reply(replica, CallReply(call_id, ReplyKind.NOTIFICATION, data))
