"""MCP sessions, kept in Valkey so that any replica serves any request of any session.

Each replica keeps a short-lived copy of the sessions it serves; a DELETE on one replica reaches the others
through the control stream, and a copy older than `recheck` seconds is read again (which also renews the TTL).
"""

import secrets
import time
from collections import OrderedDict
from typing import Any

import orjson

from services.ingress.callers import Session
from shared import streams
from shared.messages import SessionEnded, SubscriptionsChanged
from shared.valkey import COMPARE_AND_DELETE, Outbox

MAX_CACHED = 100_000


class Sessions:
    def __init__(self, outbox: Outbox, replica: str, ttl: int, recheck: float) -> None:
        self.outbox = outbox
        self.replica = replica
        self.ttl = ttl
        self.recheck = recheck
        self._cache: OrderedDict[str, Session] = OrderedDict()

    def cached(self) -> int:
        """Sessions this replica holds a copy of (muster_sessions_open)."""
        return len(self._cache)

    async def create(
        self, protocol: str, capabilities: dict[str, Any], principal: str, client: dict[str, Any]
    ) -> Session:
        session = Session(secrets.token_hex(16), protocol, capabilities, principal, checked=time.monotonic())
        key = streams.session(session.id)
        await self.outbox.send(
            b"HSET",
            key,
            b"protocol",
            protocol,
            b"capabilities",
            orjson.dumps(capabilities),
            b"principal",
            principal,
            b"client",
            orjson.dumps(client),
        )
        self.outbox.post(b"EXPIRE", key, self.ttl)
        self._remember(session)
        return session

    async def get(self, session_id: str, principal: str) -> Session | None:
        """The session, if it exists and belongs to this principal."""
        now = time.monotonic()
        session = self._cache.get(session_id)
        if session is None or now - session.checked > self.recheck:
            key = streams.session(session_id)
            reading = self.outbox.send(b"HGETALL", key)
            self.outbox.post(b"EXPIRE", key, self.ttl)  # in the same pipeline: reading a session renews it
            raw = await reading
            if not raw:
                self._cache.pop(session_id, None)
                return None
            fields = dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else raw
            session = Session(
                session_id,
                fields[b"protocol"].decode(),
                orjson.loads(fields[b"capabilities"]),
                fields[b"principal"].decode(),
                fields.get(b"level", b"").decode(),
                now,
            )
            self._remember(session)
        if session.principal != principal:
            return None
        return session

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

    async def delete(self, session: Session) -> None:
        self._cache.pop(session.id, None)
        subscriptions = await self.outbox.send(b"SMEMBERS", streams.session_subscriptions(session.id))
        servers = set()
        for entry in subscriptions or ():
            server, uri = entry.decode().split("\n", 1)
            self.outbox.post(b"SREM", streams.subscribers(server, uri), session.id)
            servers.add(server)
        await self.outbox.send(b"DEL", streams.session(session.id), streams.session_subscriptions(session.id))
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
