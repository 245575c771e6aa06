"""Run calls at their upstream and report exactly one outcome for each.

A call's outcome, its acknowledgement and the decrement of its queue depth leave in the same pipeline, so a
worker that dies before writing them leaves the call pending, to be reclaimed by another worker.
"""

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.worker.upstream import UnknownServer, Upstreams
from shared import errors, streams
from shared.http1 import ConnectFailed, ConnectionLost, Timeout
from shared.messages import Answer, Call, Reply, ReplyKind
from shared.upstream import SessionLost, StatusError, UpstreamFailure, UpstreamSession
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

MARKER_TTL = 24 * 3600
CANCEL_MEMORY = 600.0  # seconds a cancellation is remembered for calls still in a queue


@dataclass(slots=True)
class Lane:
    """One upstream server's share of this worker: its stream and how many of its calls run here now."""

    server: str
    stream: bytes
    depth: bytes
    limit: int
    running: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def of(cls, server: str, limit: int) -> "Lane":
        lane = cls(server, streams.calls(server).encode(), streams.depth(server).encode(), limit)
        lane.room.set()
        return lane


@dataclass(slots=True)
class Running:
    call: Call
    task: "asyncio.Task[None]"
    session: UpstreamSession | None = None
    upstream_id: int | None = None


@dataclass(slots=True)
class Relay:
    """A request the upstream sent during a call, waiting for the agent's answer."""

    session: UpstreamSession
    upstream_id: Any
    client_session: bytes
    call_key: bytes


class Dispatcher:
    def __init__(self, outbox: Outbox, upstreams: Upstreams, worker_id: str) -> None:
        self.outbox = outbox
        self.upstreams = upstreams
        self.worker_id = worker_id.encode()
        self.running: dict[bytes, Running] = {}
        self.cancelled: dict[bytes, float] = {}
        self.relays: dict[bytes, Relay] = {}
        self._relay_ids = itertools.count(1)
        self.refs: dict[bytes, list[bytes]] = {}  # call key -> its relays still waiting for an answer
        self._tasks: set[asyncio.Task[None]] = set()

    # entry points
    async def take(
        self, lane: Lane, entries: list[tuple[bytes, dict[bytes, bytes]]], *, redelivered: bool = False
    ) -> None:
        """Start the entries as the lane has room, then hold the reader back while the lane is full.

        Entries read but not yet started are pending for this worker: if it dies they are reclaimed, and a
        cancellation that arrives meanwhile is seen when they start.
        """
        for entry_id, fields in entries:
            await lane.room.wait()
            try:
                call = Call.from_fields(fields)
            except (KeyError, ValueError) as exc:
                logger.error("dropping malformed entry %s on %s: %s", entry_id, lane.server, exc)
                self._ack(lane, entry_id)
                continue
            lane.running += 1
            if lane.running >= lane.limit:
                lane.room.clear()
            task = asyncio.create_task(self._run(lane, entry_id, call, redelivered))
            self.running[call.key] = Running(call, task)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)  # let the calls go out upstream before the reader asks Valkey for more
        await lane.room.wait()

    def cancel(self, key: bytes) -> None:
        now = time.monotonic()
        self.cancelled[key] = now + CANCEL_MEMORY
        running = self.running.get(key)
        if running is not None:
            running.task.cancel()
        if len(self.cancelled) > 10_000:
            self.cancelled = {k: t for k, t in self.cancelled.items() if t > now}

    async def answer(self, answer: Answer) -> None:
        relay = self.relays.pop(answer.ref, None)
        if relay is None:
            logger.info("answer for unknown or finished request %s dropped", answer.ref)
            return
        if relay.client_session != answer.session:
            logger.warning("answer from another session for %s refused", answer.ref)
            self.relays[answer.ref] = relay
            return
        try:
            await relay.session.respond(relay.upstream_id, answer.body, asyncio.get_running_loop().time() + 10)
        except Exception as exc:
            logger.warning("relaying an answer upstream failed: %s", exc)

    # one call
    async def _run(self, lane: Lane, entry_id: bytes, call: Call, redelivered: bool) -> None:
        marker: bytes | None = None
        try:
            kind, body = await self._outcome(lane, entry_id, call, redelivered)
            if not call.safe:
                marker = streams.started(lane.server, entry_id.decode()).encode()
        except Exception as exc:  # the outermost edge of one call: it must still get its one outcome
            logger.exception("call %s on %s failed inside the worker", call.rid, lane.server)
            kind, body = ReplyKind.ERROR, errors.error_body(errors.INTERNAL_ERROR, f"muster worker error: {exc}")
        finally:
            self.running.pop(call.key, None)
            lane.running -= 1
            if lane.running < lane.limit:
                lane.room.set()
        self._finish(lane, entry_id, call, kind, body, marker)

    async def _outcome(self, lane: Lane, entry_id: bytes, call: Call, redelivered: bool) -> tuple[ReplyKind, bytes]:
        loop = asyncio.get_running_loop()
        remaining = call.deadline_ms / 1000 - time.time()
        if remaining <= 0:
            return ReplyKind.ERROR, errors.DeadlineExceeded(
                "the call's deadline passed while it waited in the queue; it did not run"
            ).body()
        if call.key in self.cancelled:
            return ReplyKind.ERROR, errors.Cancelled("cancelled before it ran").body()
        if not call.safe:
            marker = streams.started(lane.server, entry_id.decode())
            if redelivered and await self.outbox.send(b"EXISTS", marker):
                return ReplyKind.ERROR, errors.OutcomeUnknown(
                    "the worker running this call stopped; it may have run, and it is not safe to run twice"
                ).body()
            await self.outbox.send(b"SET", marker, self.worker_id, b"EX", MARKER_TTL)
        deadline = loop.time() + remaining
        running = self.running.get(call.key)
        try:
            return await self._execute(call, deadline, running)
        except asyncio.CancelledError:
            if running is not None and running.session is not None and running.upstream_id is not None:
                self._cancel_upstream(running.session, running.upstream_id, "cancelled by the client")
            return ReplyKind.ERROR, errors.Cancelled("cancelled by the client").body()

    async def _execute(self, call: Call, deadline: float, running: Running | None) -> tuple[ReplyKind, bytes]:
        server = call.server.decode()
        for attempt in (1, 2, 3):
            try:
                session = await self.upstreams.session(call, deadline)
            except (ConnectFailed, ConnectionLost, StatusError, UpstreamFailure, UnknownServer) as exc:
                # the call itself was not sent: it is safe to say "later"
                retry_after = exc.retry_after if isinstance(exc, StatusError) and exc.retry_after else 5.0
                return ReplyKind.ERROR, errors.UpstreamUnavailable(f"{server}: {exc}", retry_after).body()
            except Timeout:
                return ReplyKind.ERROR, errors.DeadlineExceeded(
                    f"{server} did not open a session before the deadline"
                ).body()
            upstream_id = session.next_id()
            if running is not None:
                running.session, running.upstream_id = session, upstream_id
            try:
                outcome = await session.request(
                    call.method, call.params, deadline, self._relay(call, session), request_id=upstream_id
                )
            except SessionLost:
                continue  # the upstream refused the session, not the call: open a new one and send again
            except ConnectionLost as exc:
                if not exc.sent or (call.safe and attempt == 1):  # not sent, or safe to send again: once more
                    continue
                if call.safe:
                    return ReplyKind.ERROR, errors.UpstreamUnavailable(f"{server}: {exc}", 5).body()
                return ReplyKind.ERROR, errors.OutcomeUnknown(
                    f"the connection to {server} broke during the call; it may have run"
                ).body()
            except Timeout:
                self._cancel_upstream(session, upstream_id, "deadline exceeded")
                return ReplyKind.ERROR, errors.DeadlineExceeded(
                    f"{server} did not answer before the call's deadline"
                ).body()
            except StatusError as exc:
                if exc.status in (429, 502, 503, 504):
                    return ReplyKind.ERROR, errors.UpstreamUnavailable(f"{server}: {exc}", exc.retry_after or 5).body()
                return ReplyKind.ERROR, errors.error_body(
                    errors.UPSTREAM_UNAVAILABLE, f"{server}: {exc}", {"status": exc.status}
                )
            except ConnectFailed as exc:  # not sent: safe to say "later"
                return ReplyKind.ERROR, errors.UpstreamUnavailable(f"{server}: {exc}", 5).body()
            except UpstreamFailure as exc:
                return ReplyKind.ERROR, errors.error_body(errors.INTERNAL_ERROR, f"{server}: {exc}")
            return (ReplyKind.ERROR if outcome.error else ReplyKind.RESULT), outcome.body
        return ReplyKind.ERROR, errors.UpstreamUnavailable(f"{server} keeps rejecting new sessions", 5).body()

    def _relay(self, call: Call, session: UpstreamSession) -> "Any":
        def on_message(message: dict[str, Any], data: bytes) -> None:
            if "id" not in message:
                self._reply(call, ReplyKind.NOTIFY, data)
                return
            ref = self.worker_id + b"/%d" % next(self._relay_ids)
            self.relays[ref] = Relay(session, message["id"], call.session, call.key)
            self.refs.setdefault(call.key, []).append(ref)
            body = orjson.dumps({"method": message["method"], "params": message.get("params", {})})
            self._reply(call, ReplyKind.REQUEST, body, ref)

        return on_message

    def _cancel_upstream(self, session: UpstreamSession, upstream_id: int, reason: str) -> None:
        params = orjson.dumps({"requestId": upstream_id, "reason": reason})
        task = asyncio.create_task(self._notify(session, params))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _notify(session: UpstreamSession, params: bytes) -> None:
        try:
            await session.notify(b"notifications/cancelled", params, asyncio.get_running_loop().time() + 5)
        except Exception as exc:
            logger.info("telling the upstream about a cancellation failed: %s", exc)

    # outcomes
    def _reply(self, call: Call, kind: ReplyKind, body: bytes, ref: bytes = b"") -> None:
        self.outbox.reply(call.replica, Reply(call.rid, kind, body, ref))

    def _finish(
        self, lane: Lane, entry_id: bytes, call: Call, kind: ReplyKind, body: bytes, marker: bytes | None
    ) -> None:
        self._reply(call, kind, body)
        self._ack(lane, entry_id)
        if marker is not None:
            self.outbox.post(b"DEL", marker)
        for ref in self.refs.pop(call.key, ()):
            self.relays.pop(ref, None)

    def _ack(self, lane: Lane, entry_id: bytes) -> None:
        self.outbox.post(b"XACK", lane.stream, streams.GROUP_WORKERS, entry_id)
        self.outbox.post(b"DECR", lane.depth)

    async def drain(self, seconds: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=seconds)
        await self.outbox.drain()
