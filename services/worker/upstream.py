"""One upstream server as this worker serves it: its record, its lane, the reader of its queue, and its pooled
connections and sessions (one per credential), rebuilt when the server's address or headers change."""

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from services.worker.identity import Identity
from shared import streams
from shared.http1 import Headers, Pool
from shared.identity.errors import ReauthRequired
from shared.identity.modes import mode_of
from shared.messages import Call, ServerRecord
from shared.upstream import UpstreamSession, wire_headers

logger = logging.getLogger(__name__)


class UnknownServer(Exception):
    """The server was removed from this worker while a call for it waited."""


class Lane(asyncio.BoundedSemaphore):
    """One upstream server's share of this worker: its queue, and room for `limit` of its calls at once."""

    def __init__(self, server: str, limit: int) -> None:
        super().__init__(limit)
        self.queue = streams.queue(server)

    @property
    def server(self) -> str:
        return self.queue.server

    async def room(self) -> None:
        """Returns once one more call could start."""
        await self.acquire()
        self.release()


@dataclass(eq=False)
class Upstream:
    record: ServerRecord
    lane: Lane
    subscriber: Any = None  # the FastStream reader of the server's queue, while it runs
    pool: Pool | None = None
    sessions: dict[bytes, UpstreamSession] = field(default_factory=dict)  # credential -> session
    removed: bool = False
    identity: Identity | None = None  # with auth on: the users' credentials

    @classmethod
    def of(cls, record: ServerRecord, concurrency: int, identity: Identity | None = None) -> "Upstream":
        return cls(record, Lane(record.name, concurrency), identity=identity)

    @property
    def name(self) -> str:
        return self.record.name

    def configure(self, record: ServerRecord) -> None:
        old, self.record = self.record, record
        if (old.url, old.headers) != (record.url, record.headers):
            self._drop_connections()

    def credential(self, call: Call) -> tuple[bytes, Headers]:
        """Which credential a call runs with, and the headers that carry it.

        Calls without upstream auth share one anonymous session per server; with a user credential, each user
        has sessions of their own: the key keeps one user's session (and token) from ever serving another. The
        token itself is set per call (`authorize`), as it is refreshed while the session lives on.
        """
        if mode_of(self.record) != "none":
            return b"user:" + call.principal, []
        return b"", []

    def sent_authorization(self, call: Call) -> bytes | None:
        """What the call's session last sent as Authorization (to set aside after a 401)."""
        session = self.sessions.get(self.credential(call)[0])
        return session.authorization if session is not None else None

    async def authorize(self, session: UpstreamSession, call: Call) -> None:
        """Puts the call's user's Authorization on the session (IdentityError: there is none to put)."""
        if self.identity is not None:
            session.authorize(await self.identity.authorization(self.record, call))
        elif mode_of(self.record) != "none":
            raise ReauthRequired(
                f"{self.name} is called with each user's own credential, and muster runs without sign-in"
            )

    async def session(self, call: Call, deadline: float) -> UpstreamSession:
        if self.removed:
            raise UnknownServer(f"server {self.name!r} is not configured")
        credential, auth_headers = self.credential(call)
        session = self.sessions.get(credential)
        if session is None:
            if self.pool is None:
                self.pool = Pool(self.record.url, connect_timeout=min(self.record.timeout, 10.0))
            headers = [*wire_headers(self.record.headers), *auth_headers]
            session = self.sessions[credential] = UpstreamSession(self.pool, headers)
        await self.authorize(session, call)
        await session.ensure_open(min(deadline, asyncio.get_running_loop().time() + self.record.timeout))
        return session

    def _drop_connections(self) -> None:
        if self.pool is not None:
            self.pool.close()
        self.pool = None
        self.sessions.clear()

    def retire(self) -> None:
        """The server is gone from the catalog: its connections close, and calls still waiting for it are refused."""
        self.removed = True
        self._drop_connections()

    async def close(self) -> None:
        """The worker stops: the upstream sessions are ended politely, then the connections closed."""
        self.removed = True
        sessions = [s for s in self.sessions.values() if s.is_open]
        self.sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        self._drop_connections()
