"""Calls from their queue to their one outcome: admitted, run within their lane's room, cancelled on request.

The pieces: admission.py (may it run now?), execute.py (the call at its upstream), agents.py (the agent session's
own upstream session it runs in, with bindings.py, listeners.py and standalone.py for what arrives outside a call),
relays.py (what the upstream asks the agent), outcomes.py (the reply and FINISH, written until Valkey has them).
A call holds its place in the lane until its outcome is written, so what waits for Valkey is bounded by the lanes.
"""

import asyncio
import logging
import time

from services.worker.admission import Admission
from services.worker.agents import AgentSessions
from services.worker.bindings import Bindings
from services.worker.execute import RETRY_AFTER, Executor, RetryPolicy
from services.worker.listeners import Listeners
from services.worker.liveness import Liveness
from services.worker.outcomes import Outcomes
from services.worker.relays import Relays
from services.worker.standalone import Standalone
from services.worker.telemetry import CallClock, Telemetry
from services.worker.upstream import Upstream
from shared import errors
from shared.lifecycle import Background
from shared.logs import request_id
from shared.messages import Call, ReplyKind
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

Entries = list[tuple[bytes, dict[bytes, bytes]]]


class Dispatcher:
    def __init__(
        self,
        outbox: Outbox,
        worker_id: str,
        *,
        liveness: Liveness | None = None,
        retry: RetryPolicy | None = None,
        agent_sessions: int = 10_000,
        per_agent: bool = True,
        held_streams: int = 1_000,
        answer_seconds: float = 300.0,
        telemetry: Telemetry | None = None,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self.outbox = outbox
        self.background = Background()
        self.telemetry = telemetry if telemetry is not None else Telemetry.detached()
        self.liveness = liveness or Liveness.of(worker_id, heartbeat=1.0, dead_after=5.0, replica_dead_after=15.0)
        self.admission = Admission(outbox, worker_id, self.liveness)
        self.relays = Relays(outbox, worker_id, self.background, answer_seconds=answer_seconds)
        self.outcomes = Outcomes(outbox, self.relays, self.liveness)
        self.bindings = Bindings(outbox)
        standalone = Standalone(outbox, self.bindings, self.relays)
        self.listeners = Listeners(outbox, worker_id, standalone, limit=held_streams)
        self.agents = AgentSessions(
            self.bindings, self.listeners, self.background, limit=agent_sessions, per_agent=per_agent
        )
        self.executor = Executor(self.relays, self.background, self.agents, self.telemetry, retry_after, retry)
        # call key -> its agent session and the task running it: what cancel and the end of the session stop
        self.running: dict[bytes, tuple[bytes, asyncio.Task[None]]] = {}
        # (server, entry id) of every entry this process took from a queue and has not let go of yet, started or
        # waiting for room: the pending entries of this consumer that are not here belong to nobody
        self.held: set[tuple[str, bytes]] = set()
        self.abandoned = False  # the drain is over: calls stopped now get no outcome here (abandon)

    async def take(self, upstream: Upstream, entries: Entries, *, redelivered: bool = False) -> None:
        """Start the entries as the lane has room, then hold the reader back while the lane is full.

        Entries read but not yet started are pending for this worker: if it dies they are reclaimed, and a
        cancellation that arrives meanwhile is seen when they start.
        """
        lane = upstream.lane
        server = lane.server
        self.held.update((server, entry_id) for entry_id, _ in entries)
        for entry_id, fields in entries:
            await lane.acquire()
            try:
                call = Call.from_fields(fields)
            except (KeyError, ValueError) as exc:
                lane.release()
                self.held.discard((server, entry_id))
                self.outcomes.discard(lane.queue, entry_id, f"malformed: missing or bad field {exc}")
                continue
            self.running[call.key] = (
                call.session,
                self.background.spawn(self._run(upstream, entry_id, call, redelivered)),
            )
        await asyncio.sleep(0)  # let the calls go out upstream before the reader asks Valkey for more
        await lane.room()

    def cancel(self, key: bytes) -> None:
        self.admission.cancel(key)
        running = self.running.get(key)
        if running is not None:
            running[1].cancel()

    def session_ended(self, agent: bytes) -> None:
        """The agent ended its session: nobody can receive the outcome of its calls any more. Those running here stop
        (the upstream is told, and they are not sent again on a new upstream session), and those still queued do not
        start. The session's upstream sessions end after this (the janitor), which the upstream takes as the end of
        their calls too: a call still running here then would fail, and a call safe to repeat be sent again."""
        self.admission.session_ended(agent)
        for session, task in list(self.running.values()):
            if session == agent:
                task.cancel()

    def abandon(self) -> None:
        """The end of a drain: the calls still running here stop, and get no outcome from this worker. They stay
        pending, and are taken over (run again where that is safe) once its heartbeat says it stopped."""
        self.abandoned = True
        for _, task in list(self.running.values()):
            task.cancel()

    async def _run(self, upstream: Upstream, entry_id: bytes, call: Call, redelivered: bool) -> None:
        if call.traceparent:  # every line logged about the call carries its trace id (shared/tracecontext.py)
            request_id.set(call.traceparent[3:35].decode())
        try:
            clock = self.telemetry.started(upstream.name, entry_id)
            try:
                kind, body = await self._outcome(upstream, entry_id, call, redelivered, clock)
            except asyncio.CancelledError:
                if self.abandoned:
                    raise
                kind, body = ReplyKind.ERROR, errors.Cancelled("cancelled by the client").body()
            except Exception as exc:  # the outermost edge of one call: it still gets its one outcome
                logger.exception("call %s on %s failed inside the worker", call.call_id, upstream.name)
                kind, body = ReplyKind.ERROR, errors.InternalError(f"muster worker error: {exc}").body()
            finally:
                self.running.pop(call.key, None)
                self.telemetry.stopped(upstream.name)
            await self.outcomes.finish(upstream.lane.queue, entry_id, call, kind, body, clock.stats())
        finally:
            self.held.discard((upstream.lane.server, entry_id))
            upstream.lane.release()

    async def _outcome(
        self, upstream: Upstream, entry_id: bytes, call: Call, redelivered: bool, clock: CallClock
    ) -> tuple[ReplyKind, bytes]:
        refused = await self.admission.admit(upstream.lane.queue, entry_id, call, redelivered)
        if refused is not None:
            return ReplyKind.ERROR, refused
        deadline = asyncio.get_running_loop().time() + (call.deadline_ms / 1000 - time.time())
        return await self.executor.execute(upstream, call, deadline, clock)

    async def drain(self, seconds: float) -> None:
        """Waits (within a bound) for the calls running here and their outcomes to be written; lets go of the GET
        streams held here."""
        await self.background.wait(seconds)
        await self.outcomes.background.wait(seconds)
        await self.listeners.close(seconds)
        await self.outbox.drain()
