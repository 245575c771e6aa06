"""What the worker records of each call: its wait in the queue, its request to the upstream (time, error class,
connect errors), the calls running per server, upstream sessions opened, redeliveries and dead letters; and the
traceparent the upstream request carries.

Every call the dispatcher starts goes through `started` and `stopped`; every request of a call to its upstream
goes through `request` and then `Request.answered` or `Request.failed`, so that each is counted once. The stats
a call's outcome carries to the ingress (CallStats) are filled in here.
"""

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import orjson

from services.worker.upstream import Upstream
from shared import errors, labels
from shared.http1 import ConnectFailed, Timeout
from shared.instruments import WorkerInstruments
from shared.labels import LabelBounds
from shared.messages import Call, CallStats, ServerRecord
from shared.metrics import (
    DEAD_LETTERS,
    IN_FLIGHT,
    REDELIVERIES,
    TOKEN_EXCHANGES,
    TOKEN_REFRESHES,
    UPSTREAM_CONNECT_ERRORS,
    UPSTREAM_INITIALIZATIONS,
    UPSTREAM_SESSIONS,
    Metrics,
    Samples,
)
from shared.tracecontext import TraceParent
from shared.tracing import Span, Tracing
from shared.upstream import Outcome, SessionLost

TRACEPARENT: Final = b"traceparent"
_IS_ERROR: Final = b'"isError"'


def is_tool_error(body: bytes) -> bool:
    """Whether a tools/call result has isError set. Servers built on the MCP SDKs send `"isError": false` with
    every result, so the result is parsed (to tell the top-level flag from a nested key) only when some
    `"isError"` in it is followed by true."""
    at = body.find(_IS_ERROR)
    while at >= 0:
        after = body[at + len(_IS_ERROR) : at + len(_IS_ERROR) + 16].lstrip()
        if after[:1] == b":" and after[1:].lstrip().startswith(b"true"):
            try:
                result = orjson.loads(body)
            except orjson.JSONDecodeError:
                return False
            return isinstance(result, dict) and result.get("isError") is True
        at = body.find(_IS_ERROR, at + 1)
    return False


def failure_type(exc: BaseException) -> str:
    """The error_type label of a request that raised instead of answering."""
    if isinstance(exc, asyncio.CancelledError):
        return str(errors.CANCELLED)
    if isinstance(exc, SessionLost):
        return "http_404"
    if isinstance(exc, Timeout) and not isinstance(exc, ConnectFailed):
        return labels.TIMEOUT  # the call's deadline passed while the upstream worked on it
    return labels.connect_error_class(exc)


def reaches_nothing(exc: BaseException) -> bool:
    """Whether a failure means the upstream could not be reached (a connect error), rather than a slow tool, a
    cancelled call or a forgotten session."""
    if isinstance(exc, asyncio.CancelledError | SessionLost):
        return False
    return not (isinstance(exc, Timeout) and not isinstance(exc, ConnectFailed))


@dataclass(slots=True)
class CallClock:
    """What a call's outcome tells the ingress: filled in while the call runs."""

    queue_us: int
    upstream_us: int = -1
    tool_error: bool = False

    def stats(self) -> CallStats:
        return CallStats(self.queue_us, self.upstream_us, self.tool_error)


@dataclass(slots=True)
class Request:
    """One request of a call to its upstream, from send to answer."""

    telemetry: "Telemetry"
    server: str
    call: Call
    protocol: str
    clock: CallClock | None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    span: Span | None = None
    started: float = 0.0

    def answered(self, outcome: Outcome) -> None:
        if outcome.error:
            error_type = labels.classify(labels.code_of(outcome.body))[1]
        elif self.call.method == b"tools/call" and is_tool_error(outcome.body):
            error_type = labels.TOOL_ERROR
            if self.clock is not None:
                self.clock.tool_error = True
        else:
            error_type = ""
        self._end(error_type)

    def failed(self, exc: BaseException) -> None:
        if reaches_nothing(exc):
            self.telemetry.connect_error(self.server, exc)
        self._end(failure_type(exc))

    def _end(self, error_type: str) -> None:
        seconds = time.perf_counter() - self.started
        if self.clock is not None:
            self.clock.upstream_us = max(self.clock.upstream_us, 0) + int(seconds * 1_000_000)
        t = self.telemetry
        if t.instruments is not None:
            c = self.call
            t.instruments.upstream(
                self.server, c.method.decode(), c.target.decode(), self.protocol, error_type, seconds
            )
        if self.span is not None:
            t.tracing.end(self.span, error_type)


class Telemetry:
    def __init__(
        self, metrics: Metrics, bounds: LabelBounds, instruments: WorkerInstruments | None, tracing: Tracing
    ) -> None:
        self.metrics = metrics
        self.bounds = bounds
        self.instruments = instruments  # None: call_metrics off
        self.tracing = tracing
        self.running: dict[str, int] = {}  # server -> calls this worker runs now (0 stays: the gauge reads 0)
        self._redeliveries = metrics.counter(REDELIVERIES)
        self._dead_letters = metrics.counter(DEAD_LETTERS)
        self._connect_errors = metrics.counter(UPSTREAM_CONNECT_ERRORS)
        self._initializations = metrics.counter(UPSTREAM_INITIALIZATIONS)
        self._tokens = {"refresh": metrics.counter(TOKEN_REFRESHES), "exchange": metrics.counter(TOKEN_EXCHANGES)}
        metrics.sample(IN_FLIGHT, self._running)

    @classmethod
    def detached(cls) -> "Telemetry":
        """Counts into a registry nobody serves: for a Dispatcher built without the worker around it (tests)."""
        return cls(Metrics("worker"), LabelBounds(), None, Tracing.off())

    def sessions(self, upstreams: Callable[[], Iterable[Upstream]]) -> None:
        """Where muster_upstream_sessions is read from at scrape time: the open sessions of every server's pool,
        the shared ones and the agent sessions' own that this worker holds."""

        def count() -> Samples:
            return {
                (self.bounds.server(u.name),): sum(1 for s in u.sessions.values() if s.is_open)
                + sum(1 for b in u.bound.values() if b.session.is_open)
                for u in upstreams()
            }

        self.metrics.sample(UPSTREAM_SESSIONS, count)

    def catalog_changed(self, records: Iterable[ServerRecord]) -> None:
        """Label values are bounded by the servers this worker serves, and their tools and prompts."""
        if self.instruments is not None:
            self.instruments.catalog_changed(records)
        else:
            self.bounds.update(records)

    def started(self, server: str, entry_id: bytes) -> CallClock:
        """A call starts: it waited in its stream since the entry was added (the entry id is Valkey's clock)."""
        self.running[server] = self.running.get(server, 0) + 1
        waited = max(0.0, time.time() - int(entry_id.split(b"-", 1)[0]) / 1000)
        if self.instruments is not None:
            self.instruments.taken(server, waited)
        return CallClock(int(waited * 1_000_000))

    def stopped(self, server: str) -> None:
        self.running[server] -= 1

    def request(self, server: str, call: Call, protocol: bytes, clock: CallClock | None) -> Request:
        """A request of the call is about to be sent: the headers it carries, and the record to end it with."""
        request = Request(self, server, call, protocol.decode(), clock)
        if self.tracing.enabled:
            name = call.target.decode()
            request.span, trace = self.tracing.client(
                server, call.method.decode(), name, request.protocol, TraceParent.parse(call.traceparent)
            )
            request.headers = [(TRACEPARENT, trace.header())]
        elif call.traceparent:
            request.headers = [(TRACEPARENT, call.traceparent)]
        request.started = time.perf_counter()
        return request

    def connect_error(self, server: str, exc: BaseException) -> None:
        self._connect_errors.labels(self.bounds.server(server), labels.connect_error_class(exc)).inc()

    def initialized(self, server: str, lost: bool) -> None:
        """An upstream session was opened: the first one, or again after the server forgot it."""
        self._initializations.labels(self.bounds.server(server), "lost" if lost else "new").inc()

    def token(self, kind: str, server: str, outcome: str) -> None:
        """An upstream token was refreshed or exchanged (kind "refresh" | "exchange"): ok, rejected or error."""
        bounded = LabelBounds.one_of(outcome, labels.CREDENTIAL_OUTCOMES)
        self._tokens[kind].labels(self.bounds.server(server), bounded).inc()

    def redelivered(self, server: str, count: int) -> None:
        if count:
            self._redeliveries.labels(self.bounds.server(server)).inc(count)

    def dead_lettered(self, server: str) -> None:
        self._dead_letters.labels(self.bounds.server(server)).inc()

    def _running(self) -> Samples:
        servers = self.bounds.servers
        return {(s,): n for s, n in self.running.items() if s in servers}  # a server gone from the catalog: gone
