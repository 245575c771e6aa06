"""MCP sessions, kept in Valkey so that any replica serves any request of any session.

Each replica keeps a short-lived copy of the sessions it serves; a DELETE on one replica reaches the others
through the control stream, and a copy older than `recheck` seconds is read again (which also renews the TTL).

What a client writes into Valkey is bounded: a session's capabilities and clientInfo in bytes (`max_bytes`), the
sessions in count (`max_sessions`, counted in streams.SESSIONS, a sorted set scored by expiry) and in lifetime
(`ttl` after their last use, with everything kept for them: subscriptions, relayed requests not yet answered).
"""

import logging
import secrets
import time
from collections import OrderedDict

from services.ingress.callers import Session
from shared import errors, rawjson, streams
from shared.messages import SessionEnded, SubscriptionsChanged
from shared.valkey import COMPARE_AND_DELETE, Outbox

logger = logging.getLogger(__name__)

MAX_CACHED = 100_000


class Sessions:
    def __init__(
        self,
        outbox: Outbox,
        replica: str,
        ttl: int,
        recheck: float,
        *,
        max_sessions: int = 100_000,
        max_bytes: int = 64 * 1024,
        retry_after: float = 1.0,
    ) -> None:
        self.outbox = outbox
        self.replica = replica
        self.ttl = ttl
        self.recheck = recheck
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.retry_after = retry_after
        self._cache: OrderedDict[str, Session] = OrderedDict()

    def cached(self) -> int:
        """Sessions this replica holds a copy of (muster_sessions_open)."""
        return len(self._cache)

    async def create(self, protocol: str, capabilities: bytes, principal: str, client: bytes) -> Session:
        """A new session; `capabilities` and `client` (clientInfo) are stored as the bytes the client sent."""
        if len(capabilities) + len(client) > self.max_bytes:
            raise errors.InvalidParams(
                f"Invalid params: capabilities and clientInfo together exceed {self.max_bytes} bytes"
            )
        parsed = rawjson.loads(capabilities)
        now = time.time()
        self.outbox.post(b"ZREMRANGEBYSCORE", streams.SESSIONS, b"-inf", b"%d" % now)
        if await self.outbox.send(b"ZCARD", streams.SESSIONS) >= self.max_sessions:
            raise errors.AtCapacity(
                f"muster holds its limit of {self.max_sessions} sessions; retry shortly", self.retry_after
            )
        session = Session(secrets.token_hex(16), protocol, parsed, principal, checked=time.monotonic())
        key = streams.session(session.id)
        writing = self.outbox.send(
            b"HSET",
            key,
            b"protocol",
            protocol,
            b"capabilities",
            capabilities,
            b"principal",
            principal,
            b"client",
            client,
        )
        self.outbox.post(b"EXPIRE", key, self.ttl)
        self.outbox.post(b"ZADD", streams.SESSIONS, b"%d" % (now + self.ttl), session.id)
        await writing
        self._remember(session)
        return session

    async def get(self, session_id: str, principal: str) -> Session | None:
        """The session, if it exists and belongs to this principal."""
        now = time.monotonic()
        session = self._cache.get(session_id)
        if session is None or now - session.checked > self.recheck:
            key = streams.session(session_id)
            reading = self.outbox.send(b"HGETALL", key)
            self._renew(session_id)  # in the same pipeline: reading a session renews it
            raw = await reading
            if not raw:
                self._cache.pop(session_id, None)
                return None
            fields = dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else raw
            capabilities = rawjson.loads(fields[b"capabilities"])
            session = Session(
                session_id,
                fields[b"protocol"].decode(),
                capabilities if isinstance(capabilities, dict) else {},
                fields[b"principal"].decode(),
                fields.get(b"level", b"").decode(),
                now,
            )
            self._remember(session)
        if session.principal != principal:
            return None
        return session

    def _renew(self, session_id: str) -> None:
        for key in (
            streams.session(session_id),
            streams.session_subscriptions(session_id),
            streams.session_asked(session_id),
        ):
            self.outbox.post(b"EXPIRE", key, self.ttl)
        self.outbox.post(b"ZADD", streams.SESSIONS, b"XX", b"%d" % (time.time() + self.ttl), session_id)

    async def set_level(self, session: Session, level: str) -> None:
        session.level = level
        await self.outbox.send(b"HSET", streams.session(session.id), b"level", level)

    async def hold_stream(self, session: Session, held: bool) -> None:
        """Records which replica holds the session's GET stream, so that notifications for it find their way."""
        key = streams.session(session.id)
        if held:
            await self.outbox.send(b"HSET", key, b"stream", self.replica)
        else:
            # only if this replica still holds it: another may have taken the stream over since
            await self.outbox.script(COMPARE_AND_DELETE, (key,), (self.replica, b"stream"))

    def ask(self, session_id: bytes, ref: bytes) -> None:
        """A request relayed to the session under `ref`: the session may answer it, once."""
        key = streams.session_asked(session_id.decode())
        self.outbox.post(b"SADD", key, ref)
        self.outbox.post(b"EXPIRE", key, self.ttl)

    async def answered(self, session: Session, ref: bytes) -> bool:
        """Whether `ref` names a request relayed to this session and not answered yet; from now on it is answered."""
        return bool(await self.outbox.send(b"SREM", streams.session_asked(session.id), ref))

    async def delete(self, session: Session) -> None:
        self._cache.pop(session.id, None)
        subscriptions = await self.outbox.send(b"SMEMBERS", streams.session_subscriptions(session.id))
        servers = set()
        for entry in subscriptions or ():
            server, uri = entry.decode().split("\n", 1)
            self.outbox.post(b"SREM", streams.subscribers(server, uri), session.id)
            servers.add(server)
        self.outbox.post(b"ZREM", streams.SESSIONS, session.id)
        self.outbox.post(b"DEL", streams.session_subscriptions(session.id))
        self.outbox.post(b"DEL", streams.session_asked(session.id))
        await self.outbox.send(b"DEL", streams.session(session.id))
        self.outbox.publish(streams.CONTROL, SessionEnded(session=session.id))
        for server in servers:
            self.outbox.publish(streams.CONTROL, SubscriptionsChanged(server=server))

    def copy(self, session_id: str) -> Session | None:
        """This replica's copy of a session (one whose GET stream it holds has one)."""
        return self._cache.get(session_id)

    def forget(self, session_id: str) -> None:
        self._cache.pop(session_id, None)

    def _remember(self, session: Session) -> None:
        self._cache[session.id] = session
        self._cache.move_to_end(session.id)
        if len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
