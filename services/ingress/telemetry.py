"""What the ingress records of each request: the metrics of shared/instruments.py, the one log line per routed
call, and the trace context a call carries to the worker and the upstream.

Every routed call ends in `Telemetry.finished` or `Telemetry.refused`, exactly once, so that it is counted once;
every other request the ingress answers ends in `answered`. With `call_metrics` and `call_log` off, what is left
per call is its trace context (the request id the worker and the upstream get) and two attribute tests.
"""

import logging
import time
from contextvars import Token
from dataclasses import dataclass
from typing import Any, Final

from services.ingress.callers import Caller
from services.ingress.http import Head
from shared import errors, labels
from shared.instruments import IngressInstruments
from shared.labels import LabelBounds
from shared.logs import CallRecord, PrincipalHasher, log_call, request_id
from shared.messages import CallReply, ReplyKind
from shared.metrics import NOTIFICATIONS, REJECTIONS, Metrics
from shared.tracecontext import TraceParent, incoming
from shared.tracing import Span, Tracing

logger = logging.getLogger(__name__)

REPLICA_FULL: Final = "replica_full"
QUEUE_FULL: Final = "queue_full"


def notification_method(body: bytes) -> str:
    """The method of a notification as bytes, found without parsing it (bounded to the known methods after)."""
    start = body.find(b'"method":"')
    if start < 0:
        return labels.OTHER
    start += 10
    end = body.find(b'"', start)
    return body[start:end].decode("utf-8", "replace") if end > 0 else labels.OTHER


@dataclass(slots=True)
class CallSpan:
    """One routed call from the moment it was routed until its outcome was sent."""

    server: str
    target: str  # the upstream's name of the tool or prompt, "" for other methods
    exposed: str  # the name the agent used
    method: str
    caller: Caller
    trace: TraceParent
    started: float
    scope: Token[str | None]  # the request id's, put back when the call ends
    span: Span | None  # the OpenTelemetry span, when tracing is on


class Telemetry:
    def __init__(
        self,
        metrics: Metrics,
        bounds: LabelBounds,
        instruments: IngressInstruments | None,
        hasher: PrincipalHasher | None,
        tracing: Tracing,
    ) -> None:
        self.metrics = metrics
        self.bounds = bounds
        self.instruments = instruments  # None: call_metrics off
        self.hasher = hasher  # None: call_log off
        self.tracing = tracing
        self._rejections = metrics.counter(REJECTIONS)
        self._notifications = metrics.counter(NOTIFICATIONS)

    def begin(self, head: Head, caller: Caller, method: str, params: Any, server: str, target: str) -> CallSpan:
        parent = incoming(params, head.raw)
        exposed = params.get("name", "") if isinstance(params, dict) else ""
        span = None
        if self.tracing.enabled:
            span, trace = self.tracing.server(method, exposed, caller.protocol, parent)
        else:
            trace = TraceParent.continue_from(parent)
        scope = request_id.set(trace.trace_id)
        return CallSpan(server, target, exposed, method, caller, trace, time.perf_counter(), scope, span)

    def refused(self, call: CallSpan, exc: errors.MusterError, reason: str | None) -> None:
        """The call did not go into its queue: backpressure (`reason` says which bound), or Valkey is away."""
        if reason is not None:
            self._rejections.labels(self.bounds.server(call.server), reason).inc()
        self._end(call, exc.code, None)

    def finished(self, call: CallSpan, reply: CallReply | None) -> None:
        """The call's outcome was sent to its caller; None: the caller went away before it could be."""
        if reply is None:
            self._end(call, errors.CANCELLED, None)
        elif reply.kind is ReplyKind.ERROR:
            self._end(call, labels.code_of(reply.body), reply)
        else:
            self._end(call, None, reply)

    def _end(self, call: CallSpan, code: int | None, reply: CallReply | None) -> None:
        seconds = time.perf_counter() - call.started
        stats = reply.stats if reply is not None else None
        tool_error = stats is not None and stats.tool_error
        if self.instruments is not None:
            self.instruments.routed(
                call.server, call.target, call.exposed, call.method, call.caller.protocol, code, tool_error, seconds
            )
        outcome, error_type = labels.classify(code, tool_error)
        if call.span is not None:
            self.tracing.end(call.span, error_type)
        if self.hasher is not None:
            record = CallRecord(
                request_id=call.trace.trace_id,
                session=call.caller.session_id.decode(),
                principal=self.hasher(call.caller.principal),
                server=call.server,
                tool=call.target,
                method=call.method,
                outcome=outcome,
                total_ms=round(seconds * 1000, 3),
                queue_ms=None if stats is None else stats.queue_us / 1000,
                upstream_ms=None if stats is None or stats.upstream_us < 0 else stats.upstream_us / 1000,
                span_id=call.trace.span_id,
            )
            log_call(logger, record)
        request_id.reset(call.scope)

    def answered(self, method: str, caller: Caller | None, params: Any, code: int | None, started: float) -> None:
        """A request the ingress answered itself (lists, initialize, ping, one refused before routing)."""
        if self.instruments is not None:
            name = params.get("name", "") if isinstance(params, dict) else ""
            protocol = caller.protocol if caller is not None else _requested(params)
            self.instruments.answered(
                method, protocol, code, time.perf_counter() - started, name=name if isinstance(name, str) else ""
            )

    def notified(self, body: bytes) -> None:
        """A notification went to an agent: relayed during a call, or on its GET stream."""
        self._notifications.labels(LabelBounds.method(notification_method(body))).inc()


def _requested(params: Any) -> str:
    version = params.get("protocolVersion") if isinstance(params, dict) else None
    return version if isinstance(version, str) else ""
