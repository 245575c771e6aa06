"""Each agent session's own upstream session at each stateful server, usable by any worker.

The steady state is a hit in this worker's cache: no Valkey round trip. A miss reads the binding (one round trip)
and adopts it; with none, this worker opens the upstream session (single flight per agent session and server),
re-applies the agent's logging level, and records the binding unless another worker was faster, in which case it
ends its own and uses the winner's. A session the upstream lost is opened again and its binding replaced only
while it still names the lost id, so that workers meeting the same loss converge on one new session.

Sessionless upstreams (no Mcp-Session-Id) and per-request agents (no session) use the shared pool instead.
"""

import asyncio
import logging

import orjson

from services.worker.bindings import Binding, Bindings
from services.worker.listeners import Listeners
from services.worker.upstream import Bound, ForeignSession, Unbound, UnknownServer, Upstream
from shared.http1 import HttpError
from shared.lifecycle import Background
from shared.messages import Call
from shared.upstream import UpstreamFailure, UpstreamSession

logger = logging.getLogger(__name__)

STREAM_WAIT = 2.0  # seconds a new upstream session's first call waits for its GET stream to be established


def _retrieve(task: "asyncio.Task[None]") -> None:
    if not task.cancelled():
        task.exception()


class AgentSessions:
    def __init__(
        self, bindings: Bindings, listeners: Listeners, background: Background, *, limit: int, per_agent: bool = True
    ) -> None:
        self.bindings = bindings
        self.listeners = listeners
        self.background = background
        self.limit = limit  # agent sessions this worker keeps per server
        self.per_agent = per_agent  # False: every call uses the shared pool (MUSTER_WORKER_UPSTREAM_SESSIONS=shared)

    async def session(
        self, upstream: Upstream, call: Call, deadline: float, authorization: bytes | None = None
    ) -> tuple[UpstreamSession, Bound | None]:
        """The session the call runs in, and its binding when it is the agent session's own.

        `authorization` is the call's user's own (Upstream.authorization): it goes only on a session of that
        principal, put there before the session is opened or used."""
        if upstream.removed:
            raise UnknownServer(f"server {upstream.name!r} is not configured")
        if not call.session or upstream.stateful is False or not self.per_agent:
            return await upstream.shared(call.principal, deadline, authorization), None
        bound = upstream.bound.get(call.session)
        if bound is None:
            bound = Bound(call.session, call.principal, upstream.new_session(call.principal))
            upstream.remember(bound, self.limit)
        elif bound.principal != call.principal:
            raise ForeignSession("this MCP session's upstream session belongs to another principal")
        else:
            upstream.bound.move_to_end(call.session)
        bound.session.authorize(authorization)  # bound.principal is the call's: checked above, or made so
        if not bound.session.is_open:
            try:
                await self.open(upstream, bound, deadline)
            except Unbound:
                self._drop(upstream, bound)
                return await upstream.shared(call.principal, deadline, authorization), None
            except ForeignSession:
                self._drop(upstream, bound)  # made for a principal the binding is not for
                raise
        self.listeners.consider(upstream, bound, self.open)
        return bound.session, bound

    @staticmethod
    def _drop(upstream: Upstream, bound: Bound) -> None:
        if upstream.bound.get(bound.agent) is bound:
            del upstream.bound[bound.agent]

    async def open(self, upstream: Upstream, bound: Bound, deadline: float) -> None:
        """Makes the bound session usable: adopted from its binding, or opened upstream. Concurrent callers wait
        for one attempt, which runs as a task of its own so that a caller cancelled meanwhile cancels it for none."""
        if bound.opening is None or bound.opening.done():
            bound.opening = asyncio.ensure_future(self._establish(upstream, bound, deadline))
            bound.opening.add_done_callback(_retrieve)
        await asyncio.shield(bound.opening)

    async def _establish(self, upstream: Upstream, bound: Bound, deadline: float) -> None:
        session = bound.session
        lost = session.session_id  # None for a session never opened; else the id the upstream forgot
        found = await self.bindings.lookup(bound.agent, upstream.name)
        current = found.binding
        if current is not None:
            if current.principal != bound.principal:
                raise ForeignSession("this MCP session's upstream session belongs to another principal")
            if current.session_id != lost:
                session.adopt(current.session_id, current.protocol)
                return
        if not found.agent_exists:
            raise Unbound("the agent session has ended")
        await session.ensure_open(min(deadline, asyncio.get_running_loop().time() + upstream.record.timeout))
        if session.session_id is None:
            upstream.stateful = False
            raise Unbound(f"{upstream.name} keeps no sessions")
        upstream.stateful = True
        if found.level and "logging" in upstream.record.capabilities:
            await self._set_level(session, found.level, deadline)
        mine = Binding(session.session_id, session.protocol, bound.principal)
        winner = await self.bindings.bind(bound.agent, upstream.name, mine, found.ttl_ms, lost)
        if winner.session_id != mine.session_id:
            self.background.spawn(self._discard(upstream, mine))
            if winner.principal != bound.principal:
                raise ForeignSession("this MCP session's upstream session belongs to another principal")
            session.adopt(winner.session_id, winner.protocol)
            return
        logger.info("opened an upstream session at %s for session %s…", upstream.name, bound.agent[:8].decode())
        # A server that asks outside any call sends on its GET stream, and drops what it sends while none is open:
        # the first call waits (a little) for the stream to be there.
        wait = min(STREAM_WAIT, deadline - asyncio.get_running_loop().time())
        await self.listeners.hold(upstream, bound, self.open, wait=max(0.0, wait))

    @staticmethod
    async def _set_level(session: UpstreamSession, level: bytes, deadline: float) -> None:
        try:
            outcome = await session.request(b"logging/setLevel", orjson.dumps({"level": level.decode()}), deadline)
        except (HttpError, UpstreamFailure, OSError) as exc:
            logger.info("re-applying the log level upstream failed: %s", exc)
            return
        if outcome.error:
            logger.info("the upstream refused the agent's log level: %s", outcome.body[:200].decode("utf-8", "replace"))

    @staticmethod
    async def _discard(upstream: Upstream, binding: Binding) -> None:
        """Ends an upstream session that lost the race to become the binding."""
        session = upstream.new_session(binding.principal)
        session.adopt(binding.session_id, binding.protocol)
        await session.close()

    def forget(self, agent: bytes, upstreams: list[Upstream]) -> None:
        """The agent session ended: its sessions leave this worker's cache, and their GET streams are let go."""
        for upstream in upstreams:
            upstream.bound.pop(agent, None)
        self.listeners.stop(agent)
