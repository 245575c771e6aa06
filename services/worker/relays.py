"""What an upstream asks an agent, on its way to the agent and the answer's way back: each request gets a ref that
routes the agent's answer back through this worker's inbox to the same upstream request.

During a call, notifications go straight to the caller's reply stream and requests (sampling, elicitation, roots)
follow them with their ref. Requests from outside a call (an upstream's GET stream, standalone.py) wait here too,
within a bound: an upstream is always answered, by the agent or with an error, never left to time out. A ping is
answered here: it asks whether muster is there, not the agent.
"""

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from shared import errors
from shared.http1 import HttpError
from shared.lifecycle import Background
from shared.messages import Answer, Call, CallReply, ReplyKind
from shared.rawjson import Document
from shared.upstream import OnMessage, UpstreamFailure, UpstreamSession
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

ANSWER_SECONDS = 10.0  # for sending an answer upstream
PONG = b'"result":{}'


@dataclass(slots=True)
class Relay:
    """A request the upstream sent, waiting for the agent's answer."""

    session: UpstreamSession
    upstream_id: Any
    client_session: bytes  # only the session the request went to may answer it
    call_key: bytes  # b"" for a request from outside any call
    timer: asyncio.TimerHandle | None = None


class Relays:
    def __init__(
        self, outbox: Outbox, worker_id: str, background: Background | None = None, *, answer_seconds: float = 300.0
    ) -> None:
        self.outbox = outbox
        self.worker_id = worker_id.encode()
        self.background = background or Background()
        self.answer_seconds = answer_seconds  # how long a request from outside a call waits for the agent
        self.waiting: dict[bytes, Relay] = {}  # ref -> relay
        self.by_call: dict[bytes, list[bytes]] = {}  # call key -> its refs still waiting
        self._refs = itertools.count(1)

    def _ref(self) -> bytes:
        return self.worker_id + b"/%d" % next(self._refs)

    def on_message(self, call: Call, session: UpstreamSession) -> OnMessage:
        """The handler of what the upstream sends during this call, other than its response."""

        def relay(message: dict[str, Any], data: bytes) -> None:
            if "id" not in message:
                self.outbox.reply(call.replica, CallReply(call.call_id, ReplyKind.NOTIFICATION, data))
                return
            request = Document(data, message)
            if message.get("method") == "ping":
                self.respond(session, request.member("id"), PONG)
                return
            ref = self._ref()
            self.waiting[ref] = Relay(session, request.member("id"), call.session, call.key)
            self.by_call.setdefault(call.key, []).append(ref)
            # the request as the upstream sent it, without its id: the ingress gives it the id the client answers
            body = request.rebuilt({}, frozenset({"id", "jsonrpc"}))
            self.outbox.reply(call.replica, CallReply(call.call_id, ReplyKind.REQUEST, body, ref))

        return relay

    def expect(self, session: UpstreamSession, upstream_id: Any, client_session: bytes) -> bytes:
        """A ref for a request from outside any call: answered by the agent, or with an error after the bound."""
        ref = self._ref()
        relay = self.waiting[ref] = Relay(session, upstream_id, client_session, b"")
        relay.timer = asyncio.get_running_loop().call_later(self.answer_seconds, self._expire, ref)
        return ref

    def _expire(self, ref: bytes) -> None:
        relay = self.waiting.pop(ref, None)
        if relay is not None:
            why = f"the client did not answer within {self.answer_seconds:g} s"
            self.respond(relay.session, relay.upstream_id, b'"error":' + errors.InternalError(why).body())

    def respond(self, session: UpstreamSession, upstream_id: Any, body: bytes) -> None:
        """Answers an upstream request in the background."""
        self.background.spawn(self._respond(session, upstream_id, body))

    @staticmethod
    async def _respond(session: UpstreamSession, upstream_id: Any, body: bytes) -> None:
        try:
            await session.respond(upstream_id, body, asyncio.get_running_loop().time() + ANSWER_SECONDS)
        except (HttpError, UpstreamFailure, OSError) as exc:  # the call's own outcome says what went wrong
            logger.warning("relaying an answer upstream failed: %s", exc)

    async def answer(self, answer: Answer) -> None:
        relay = self.waiting.get(answer.ref)
        if relay is None:
            logger.info("answer for unknown or finished request %s dropped", answer.ref)
            return
        if answer.session and relay.client_session != answer.session:  # b"": the ingress could not deliver it
            logger.warning("answer from another session for %s refused", answer.ref)
            return
        del self.waiting[answer.ref]
        if relay.timer is not None:
            relay.timer.cancel()
        await self._respond(relay.session, relay.upstream_id, answer.body)

    def drop(self, call_key: bytes) -> None:
        """The call is finished: its requests can no longer be answered."""
        for ref in self.by_call.pop(call_key, ()):
            self.waiting.pop(ref, None)
