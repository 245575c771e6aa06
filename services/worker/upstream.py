"""One upstream server as this worker serves it: its record, its lane, its circuit breaker, the reader of its
queue, its pooled connections, and the sessions spoken over them: the shared ones (one per credential, for
sessionless upstreams and per-request agents) and the agent sessions' own (see agents.py), all rebuilt when the
server's address or headers change."""

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.worker.breaker import Breaker
from services.worker.identity import Identity
from shared import streams
from shared.http1 import Headers, Pool
from shared.identity.errors import ReauthRequired
from shared.identity.modes import mode_of
from shared.messages import Call, ServerRecord
from shared.upstream import UpstreamSession, wire_headers


class UnknownServer(Exception):
    """The server was removed from this worker while a call for it waited."""


class ForeignSession(Exception):
    """The agent session's upstream session belongs to another principal: it is never used for this one."""


class Unbound(Exception):
    """No upstream session of its own for this agent session: its calls use the shared pool."""


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


@dataclass(eq=False, slots=True)
class Bound:
    """One agent session's own upstream session at this server, as this worker holds it."""

    agent: bytes  # the agent's MCP session id
    principal: bytes  # whose it is: never used for a call of another principal
    session: UpstreamSession
    opening: "asyncio.Task[None] | None" = None  # the one lookup or handshake other calls wait for
    lease_at: float = 0.0  # loop time when this worker may next try to hold the session's GET stream
    in_flight: bytes = b""  # the key of its calls in flight (streams.in_flight), made once
    in_flight_renewed: float = float("-inf")  # loop time when this worker last renewed the key's lifetime


@dataclass(eq=False)
class Upstream:
    record: ServerRecord
    lane: Lane
    breaker: Breaker
    subscriber: Any = None  # the FastStream reader of the server's queue, while it runs
    pool: Pool | None = None
    sessions: dict[bytes, UpstreamSession] = field(default_factory=dict)  # credential -> shared session
    bound: "OrderedDict[bytes, Bound]" = field(default_factory=OrderedDict)  # agent session -> its own, LRU
    # Learned at the first handshake: True when the upstream names its sessions (Mcp-Session-Id), which is when
    # each agent session gets its own; False: one shared session per credential serves every call.
    stateful: bool | None = None
    streams_after: float = 0.0  # loop time before which the upstream is not asked for a GET stream again (405)
    removed: bool = False
    max_result_bytes: int = 64 * 1024 * 1024  # a JSON body, or one event: what one answer may hold
    identity: Identity | None = None  # with auth on: the users' credentials
    on_open: Callable[[bool], None] | None = None  # told of each session opened (True: again): telemetry counts
    # Held while the queue's reader is started or stopped: a reader still starting is not taken for a stopped one
    # and started a second time (two readers would take calls the lane has no room for, while other workers idle).
    reader_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def of(
        cls,
        record: ServerRecord,
        concurrency: int,
        max_result_bytes: int = 64 * 1024 * 1024,
        identity: Identity | None = None,
        *,
        breaker: Breaker | None = None,
    ) -> "Upstream":
        lane = Lane(record.name, concurrency)
        breaker = breaker or Breaker(record.name)
        return cls(record, lane, breaker, max_result_bytes=max_result_bytes, identity=identity)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def reading(self) -> bool:
        """Whether the server's queue has a reader that runs."""
        return self.subscriber is not None and bool(self.subscriber.running)

    def configure(self, record: ServerRecord) -> bool:
        """Follows a changed record; True when the connections (and the sessions on them) were dropped."""
        old, self.record = self.record, record
        if (old.url, old.headers) == (record.url, record.headers):
            return False
        self._drop_connections()
        return True

    def credential(self, principal: bytes) -> tuple[bytes, Headers]:
        """Which credential a principal's calls run with, and the headers that carry it.

        Calls without upstream auth share one anonymous session per server; with a user credential, each user
        has sessions of their own: the key keeps one user's session (and token) from ever serving another. The
        token itself is put on the session per call (`authorization`), as it is refreshed while the session lives on.
        """
        if mode_of(self.record) != "none":
            return b"user:" + principal, []
        return b"", []

    async def authorization(self, call: Call) -> bytes | None:
        """The Authorization the call's user's credential gives for this server (None: the server takes none).

        IdentityError: there is none to give (no login, refresh refused, provider down)."""
        if self.identity is not None:
            return await self.identity.authorization(self.record, call)
        if mode_of(self.record) != "none":
            raise ReauthRequired(
                f"{self.name} is called with each user's own credential, and muster runs without sign-in"
            )
        return None

    def new_session(self, principal: bytes) -> UpstreamSession:
        """A session object on the pooled connections, with the principal's credential; not opened yet."""
        if self.pool is None:
            self.pool = Pool(
                self.record.url,
                connect_timeout=min(self.record.timeout, 10.0),
                max_body_bytes=self.max_result_bytes,
                max_event_bytes=self.max_result_bytes,
            )
        _, auth_headers = self.credential(principal)
        return UpstreamSession(self.pool, [*wire_headers(self.record.headers), *auth_headers], on_open=self.on_open)

    async def shared(self, principal: bytes, deadline: float, authorization: bytes | None = None) -> UpstreamSession:
        """The session this worker shares among all calls with the principal's credential, carrying
        `authorization` (the principal's own: shared sessions are keyed by principal whenever it is not None)."""
        if self.removed:
            raise UnknownServer(f"server {self.name!r} is not configured")
        credential, _ = self.credential(principal)
        session = self.sessions.get(credential)
        if session is None:
            session = self.sessions[credential] = self.new_session(principal)
        session.authorize(authorization)
        await session.ensure_open(min(deadline, asyncio.get_running_loop().time() + self.record.timeout))
        if self.stateful is None:
            self.stateful = session.session_id is not None
        return session

    def remember(self, bound: Bound, limit: int) -> None:
        """Keeps an agent session's own session in this worker's cache, forgetting the least recently used."""
        self.bound[bound.agent] = bound
        while len(self.bound) > limit:
            self.bound.popitem(last=False)

    def _drop_connections(self) -> None:
        if self.pool is not None:
            self.pool.close()
        self.pool = None
        self.sessions.clear()
        self.bound.clear()  # they speak through the old pool; the bindings in Valkey stay, for a new lookup
        self.stateful = None
        self.streams_after = 0.0

    def retire(self) -> None:
        """The server is gone from the catalog: its connections close, and calls still waiting for it are refused."""
        self.removed = True
        self._drop_connections()

    async def close(self) -> None:
        """The worker stops: its shared upstream sessions are ended politely, then the connections closed. The
        agent sessions' own stay open at the upstream: other workers go on using them."""
        self.removed = True
        sessions = [s for s in self.sessions.values() if s.is_open]
        self.sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        self._drop_connections()
