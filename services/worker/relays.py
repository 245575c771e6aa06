"""What an upstream sends during a call, on its way to the caller: notifications go straight to the caller's reply
stream; requests (sampling, elicitation, roots) get a ref that routes the caller's answer back through this
worker's inbox to the same upstream request."""

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from shared.http1 import HttpError
from shared.messages import Answer, Call, CallReply, ReplyKind
from shared.rawjson import Document
from shared.upstream import OnMessage, UpstreamFailure, UpstreamSession
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

ANSWER_SECONDS = 10.0


@dataclass(slots=True)
class Relay:
    """A request the upstream sent during a call, waiting for the caller's answer."""

    session: UpstreamSession
    upstream_id: Any
    client_session: bytes  # only the session the request went to may answer it
    call_key: bytes


class Relays:
    def __init__(self, outbox: Outbox, worker_id: str) -> None:
        self.outbox = outbox
        self.worker_id = worker_id.encode()
        self.waiting: dict[bytes, Relay] = {}  # ref -> relay
        self.by_call: dict[bytes, list[bytes]] = {}  # call key -> its refs still waiting
        self._refs = itertools.count(1)

    def on_message(self, call: Call, session: UpstreamSession) -> OnMessage:
        """The handler of what the upstream sends during this call, other than its response."""

        def relay(message: dict[str, Any], data: bytes) -> None:
            if "id" not in message:
                self.outbox.reply(call.replica, CallReply(call.call_id, ReplyKind.NOTIFICATION, data))
                return
            ref = self.worker_id + b"/%d" % next(self._refs)
            request = Document(data, message)
            self.waiting[ref] = Relay(session, request.member("id"), call.session, call.key)
            self.by_call.setdefault(call.key, []).append(ref)
            # the request as the upstream sent it, without its id: the ingress gives it the id the client answers
            body = request.rebuilt({}, frozenset({"id", "jsonrpc"}))
            self.outbox.reply(call.replica, CallReply(call.call_id, ReplyKind.REQUEST, body, ref))

        return relay

    async def answer(self, answer: Answer) -> None:
        relay = self.waiting.get(answer.ref)
        if relay is None:
            logger.info("answer for unknown or finished request %s dropped", answer.ref)
            return
        if relay.client_session != answer.session:
            logger.warning("answer from another session for %s refused", answer.ref)
            return
        del self.waiting[answer.ref]
        try:
            deadline = asyncio.get_running_loop().time() + ANSWER_SECONDS
            await relay.session.respond(relay.upstream_id, answer.body, deadline)
        except (HttpError, UpstreamFailure, OSError) as exc:  # the call's own outcome says what went wrong
            logger.warning("relaying an answer upstream failed: %s", exc)

    def drop(self, call_key: bytes) -> None:
        """The call is finished: its requests can no longer be answered."""
        for ref in self.by_call.pop(call_key, ()):
            self.waiting.pop(ref, None)
