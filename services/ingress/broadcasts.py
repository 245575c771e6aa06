"""What reaches the ingress from outside a request, on the broadcast streams: changed server records
(capabilities) and ended sessions (control)."""

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.ingress.current import CurrentCatalog
from services.ingress.get_streams import GetStreams
from services.ingress.sessions import Sessions
from services.ingress.visibility import Visibility
from shared import records, streams
from shared.follow import Follow
from shared.messages import (
    CapabilityChange,
    Fields,
    LoginChanged,
    ServerRecord,
    SessionEnded,
    decode,
    decode_control,
)

logger = logging.getLogger(__name__)

RELOAD_SECONDS = 30.0
LIST_CHANGED = {
    "tools": b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}',
    "resources": b'{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}',
    "prompts": b'{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}',
}
_CAPABILITIES = streams.CAPABILITIES.encode()


class Broadcasts:
    def __init__(
        self,
        client: Redis,
        current: CurrentCatalog,
        get_streams: GetStreams,
        sessions: Sessions,
        visibility: Visibility | None = None,
    ) -> None:
        self.client = client
        self.current = current
        self.get_streams = get_streams
        self.sessions = sessions
        self.visibility = visibility
        self.follow = Follow(client, [streams.CAPABILITIES, streams.CONTROL])

    async def start(self) -> None:
        """Where reading starts, then the records as they are: a change in between is read, not missed."""
        await self.follow.start()
        await self.reload()

    async def reload(self) -> None:
        loaded: dict[str, ServerRecord | None] = dict(await records.load(self.client))
        for gone in set(self.current.records) - set(loaded):
            loaded[gone] = None
        self._changed(self.current.update(loaded))
        self.current.loaded = True

    def _changed(self, lists: set[str]) -> None:
        for name in sorted(lists):
            self.get_streams.broadcast(LIST_CHANGED[name])
        if lists:
            logger.info("catalog changed: %s; %d tools", ", ".join(sorted(lists)), len(self.current.catalog.tools))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reload_at = loop.time() + RELOAD_SECONDS
        async for batch in self.follow:
            try:
                for stream, entries in batch:
                    for _, fields in entries:
                        await self._handle(stream, fields)
                if loop.time() >= reload_at:  # heals an event missed while Valkey was unreachable
                    reload_at = loop.time() + RELOAD_SECONDS
                    await self.reload()
            except (RedisError, OSError, ValueError) as exc:  # ValueError: an entry that does not validate
                logger.warning("reading catalog and control events failed: %s", exc)

    async def _handle(self, stream: bytes, fields: Fields) -> None:
        if stream == _CAPABILITIES:
            change = decode(fields, CapabilityChange)
            self._changed(self.current.update(await records.load(self.client, change.servers)))
            return
        control = decode_control(fields)
        if isinstance(control, SessionEnded):
            self.sessions.forget(control.session)
            self.get_streams.close(control.session)
        elif isinstance(control, LoginChanged):
            self.login_changed(control)

    def login_changed(self, control: LoginChanged) -> None:
        """A user logged in to a server of their own: their lists change, and only theirs."""
        if self.visibility is not None:
            self.visibility.login_changed(control.subject, control.server)
        for session_id in list(self.get_streams.queues):
            session = self.sessions.copy(session_id)
            if session is not None and session.principal == control.subject:
                for message in LIST_CHANGED.values():
                    self.get_streams.send(session_id, message)
