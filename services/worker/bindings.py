"""An agent session's own upstream sessions as Valkey holds them, so that every worker can speak in them.

A binding is one agent session's upstream session at one server: its id, the protocol version it speaks and the
principal it belongs to. The bindings of one agent session are the fields of one hash (streams.upstream_sessions),
which lives BINDING_GRACE longer than the agent session, so that they are still there to be closed after the
agent session expired. Every change is a single-key script: bind (create if absent, or replace only the lost id
it still holds) and take (read and delete: exactly one worker gets to close an upstream session).

While a call of an agent session runs in its upstream session, a record says where it came from (replica, call
id), so that a request the upstream sends on its GET stream can join that call's stream, whichever worker reads it.
"""

import asyncio
import time
from dataclasses import dataclass

from services.worker.upstream import Bound
from shared import streams
from shared.messages import Call
from shared.valkey import Outbox

# KEYS: an agent session's bindings. ARGV: server, the lost id a replaced binding must still hold ("" when none is
# replaced), the new binding, the hash's lifetime in ms (never shortened). Returns the binding in force afterwards:
# the new one, or the one another worker set first.
BIND = b"""
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and (ARGV[2] == '' or string.sub(current, 1, #ARGV[2] + 1) ~= ARGV[2] .. '\\n') then
  return current
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return ARGV[3]
"""

# KEYS: an agent session's bindings. ARGV: server. The binding, removed: whoever gets it closes its upstream session.
TAKE = b"""
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then redis.call('HDEL', KEYS[1], ARGV[1]) end
return current
"""

NO_EXPIRY_MS = 3600_000  # an agent session without a TTL (never made by muster) is looked at again after an hour
IN_FLIGHT_RENEW = 60.0  # seconds between renewals of an in-flight key's lifetime by one worker


@dataclass(frozen=True, slots=True)
class Binding:
    session_id: bytes  # the upstream's Mcp-Session-Id: visible ASCII, so a newline separates it
    protocol: bytes
    principal: bytes

    def encode(self) -> bytes:
        return b"\n".join((self.session_id, self.protocol, self.principal))

    @classmethod
    def decode(cls, raw: bytes) -> "Binding":
        session_id, protocol, principal = raw.split(b"\n", 2)
        return cls(session_id, protocol, principal)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a worker needs to know before it speaks in an agent session's upstream session, read in one round trip."""

    binding: Binding | None
    level: bytes  # the logging level the agent set, b"" for none: re-applied to a new upstream session
    ttl_ms: int  # how long the agent session still lives; negative: it does not exist (any more)

    @property
    def agent_exists(self) -> bool:
        return self.ttl_ms >= 0 or self.ttl_ms == -1


class Bindings:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def lookup(self, agent: bytes, server: str) -> Lookup:
        session = streams.session(agent.decode())
        raw, level, ttl = await asyncio.gather(
            self.outbox.send(b"HGET", streams.upstream_sessions(agent.decode()), server),
            self.outbox.send(b"HGET", session, b"level"),
            self.outbox.send(b"PTTL", session),
        )
        return Lookup(Binding.decode(raw) if raw else None, level or b"", int(ttl))

    async def bind(self, agent: bytes, server: str, binding: Binding, ttl_ms: int, replacing: bytes | None) -> Binding:
        """Records the binding unless another is in force (one that is not the lost `replacing`); returns the one
        in force, and indexes the agent session for the janitor."""
        ttl_ms = ttl_ms if ttl_ms > 0 else NO_EXPIRY_MS
        key = streams.upstream_sessions(agent.decode())
        raw = await self.outbox.script(
            BIND, (key,), (server, replacing or b"", binding.encode(), ttl_ms + streams.BINDING_GRACE * 1000)
        )
        self.outbox.post(b"ZADD", streams.UPSTREAM_EXPIRY, b"NX", time.time() + ttl_ms / 1000, agent)
        return Binding.decode(raw)

    async def take(self, agent: bytes, server: str) -> Binding | None:
        raw = await self.outbox.script(TAKE, (streams.upstream_sessions(agent.decode()),), (server,))
        return Binding.decode(raw) if raw else None

    async def of(self, agent: bytes) -> dict[str, Binding]:
        """Every binding of an agent session, by server."""
        raw = await self.outbox.send(b"HGETALL", streams.upstream_sessions(agent.decode()))
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        return {server.decode(): Binding.decode(value) for server, value in pairs}

    # Calls in flight in an agent session's upstream session: written and removed without waiting (pipelined), the
    # key's lifetime renewed at most once a minute per worker; the janitor removes the key with the bindings.
    def running(self, server: str, bound: Bound, call: Call, now: float) -> None:
        key = bound.in_flight
        if not key:
            key = bound.in_flight = streams.in_flight(server, bound.agent.decode()).encode()
        self.outbox.post(b"HSET", key, call.key, call.replica + b" " + call.call_id)
        if now >= bound.in_flight_renewed + IN_FLIGHT_RENEW:
            bound.in_flight_renewed = now
            self.outbox.post(b"EXPIRE", key, streams.IN_FLIGHT_TTL)

    def finished(self, bound: Bound, call: Call) -> None:
        self.outbox.post(b"HDEL", bound.in_flight, call.key)

    def forget(self, agent: bytes, server: str) -> None:
        """The agent session's upstream session at the server ended: its in-flight record and lease go too."""
        self.outbox.post(b"DEL", streams.in_flight(server, agent.decode()), streams.listener(server, agent.decode()))

    async def running_calls(self, server: str, agent: bytes) -> list[tuple[bytes, bytes]]:
        """(replica, call id) of each call of the agent session running at the server now."""
        values = await self.outbox.send(b"HVALS", streams.in_flight(server, agent.decode()))
        found = []
        for value in values or ():
            replica, _, call_id = value.partition(b" ")
            found.append((replica, call_id))
        return found
