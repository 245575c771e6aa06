"""The end of an agent session ends its upstream sessions: one DELETE upstream per binding, sent by exactly one
worker (the one whose TAKE got the binding), whether the agent said DELETE (SessionEnded, read by every worker) or
its session expired (found by the janitor).

Every worker runs the janitor: it looks at the agent sessions indexed in streams.UPSTREAM_EXPIRY whose time has
come, each taken by exactly one worker (ZREM), and either indexes it again at its new expiry (it was renewed)
or closes its upstream sessions (it is gone).
"""

import asyncio
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from services.worker.agents import AgentSessions
from services.worker.bindings import NO_EXPIRY_MS, Bindings
from services.worker.upstream import Upstream
from shared import streams
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

SWEEP_BATCH = 100


class Janitor:
    def __init__(
        self,
        outbox: Outbox,
        bindings: Bindings,
        agents: AgentSessions,
        upstreams: Callable[[], dict[str, Upstream]],
        *,
        interval: float,
    ) -> None:
        self.outbox = outbox
        self.bindings = bindings
        self.agents = agents
        self.upstreams = upstreams
        self.interval = interval
        self.closed = 0  # upstream sessions this worker ended

    async def session_ended(self, agent: bytes) -> None:
        """The agent deleted its session: this worker lets go of it, and ends the upstream sessions it wins."""
        self.agents.forget(agent, list(self.upstreams().values()))
        await self.close(agent)

    async def close(self, agent: bytes) -> None:
        known = self.upstreams()
        for server in await self.bindings.of(agent):
            binding = await self.bindings.take(agent, server)
            self.bindings.forget(agent, server)
            upstream = known.get(server)
            if binding is None or upstream is None or upstream.removed:
                continue  # another worker ends it; or the server is gone, and its sessions with it
            session = upstream.new_session(binding.principal)
            session.adopt(binding.session_id, binding.protocol)
            await session.close()
            self.closed += 1
            logger.info("closed the upstream session at %s of session %s…", server, agent[:8].decode())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep(time.time())
            except (RedisError, ConnectionError, OSError) as exc:
                logger.warning("looking for ended sessions failed: %s", exc)

    async def sweep(self, now: float) -> None:
        """Looks at every indexed agent session whose time has come."""
        due = await self.outbox.send(b"ZRANGEBYSCORE", streams.UPSTREAM_EXPIRY, b"-inf", now, b"LIMIT", 0, SWEEP_BATCH)
        for agent in due or ():
            if not await self.outbox.send(b"ZREM", streams.UPSTREAM_EXPIRY, agent):
                continue  # another worker looks at it
            ttl_ms = await self.outbox.send(b"PTTL", streams.session(agent.decode()))
            if ttl_ms > 0 or ttl_ms == -1:  # renewed since: look again when it would expire now
                ttl_ms = ttl_ms if ttl_ms > 0 else NO_EXPIRY_MS
                self.outbox.post(b"ZADD", streams.UPSTREAM_EXPIRY, now + ttl_ms / 1000, agent)
                self.outbox.post(
                    b"PEXPIRE", streams.upstream_sessions(agent.decode()), ttl_ms + streams.BINDING_GRACE * 1000
                )
                continue
            self.agents.forget(agent, list(self.upstreams().values()))
            await self.close(agent)
