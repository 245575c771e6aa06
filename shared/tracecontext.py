"""W3C Trace Context: the request id that follows one call from the agent through ingress and worker to the
upstream server.

muster carries it as a `traceparent` (https://www.w3.org/TR/trace-context/) rather than an X-Request-Id: the Go
muster and mcp-kubernetes install OpenTelemetry's W3C propagator, so an upstream reads the header and continues
the same trace, and the MCP SDKs put the same value in `params._meta.traceparent`. One format serves the log
lines, the header to the upstream and (when tracing is on, shared/tracing.py) the spans.

The request id in every log line is the trace id. An agent that sends its own trace context (in `_meta`, as the
MCP SDK does, or as the HTTP header) has its calls logged under its own trace id; each call still has a span id
of its own, which the call's log line names.
"""

import os
from typing import Final, NamedTuple

VERSION: Final = "00"
_HEX: Final = frozenset("0123456789abcdef")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
SAMPLED: Final = "01"


def _span_id() -> str:
    while True:
        span = os.urandom(8).hex()
        if span != _ZERO_SPAN:  # all zeros is not a valid id (one chance in 2**64)
            return span


# A named tuple rather than a dataclass: one is made per call, and a tuple is made in a fifth of the time.
class TraceParent(NamedTuple):
    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits: the span this context names as the parent of the next
    flags: str = "00"  # "01": the trace is sampled

    @classmethod
    def new(cls) -> "TraceParent":
        ids = os.urandom(24).hex()  # one read for both ids: a microsecond per call, where two took two
        if ids[:32] == _ZERO_TRACE or ids[32:] == _ZERO_SPAN:
            return cls(ids[:32] if ids[:32] != _ZERO_TRACE else os.urandom(16).hex(), _span_id())
        return cls(ids[:32], ids[32:])

    @classmethod
    def parse(cls, value: str | bytes | None) -> "TraceParent | None":
        """The context of a traceparent header or `_meta` value; None for anything that is not a valid one.

        A version newer than 00 is read by its first four fields, as the specification asks.
        """
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str) or len(value) < 55:
            return None
        value = value.strip()
        version, trace_id, span_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
        if (
            value[2] != "-"
            or value[35] != "-"
            or value[52] != "-"
            or version == "ff"
            or (version == VERSION and len(value) != 55)
            or (len(value) > 55 and value[55] != "-")
            or not _HEX.issuperset(version + trace_id + span_id + flags)
            or trace_id == _ZERO_TRACE
            or span_id == _ZERO_SPAN
        ):
            return None
        return cls(trace_id, span_id, flags)

    @classmethod
    def continue_from(cls, incoming: "TraceParent | None") -> "TraceParent":
        """The context of a new span: a child of `incoming` when there is one, else the root of a new trace."""
        if incoming is None:
            return cls.new()
        return cls(incoming.trace_id, _span_id(), incoming.flags)

    @property
    def sampled(self) -> bool:
        return int(self.flags, 16) & 1 == 1

    def header(self) -> bytes:
        return f"{VERSION}-{self.trace_id}-{self.span_id}-{self.flags}".encode()

    def __str__(self) -> str:
        return f"{VERSION}-{self.trace_id}-{self.span_id}-{self.flags}"


def incoming(params: object, headers: list[tuple[bytes, bytes]]) -> TraceParent | None:
    """The trace context an agent sent with a request: in `params._meta` (the MCP SDK's place) or the header."""
    if isinstance(params, dict):
        meta = params.get("_meta")
        if isinstance(meta, dict):
            found = TraceParent.parse(meta.get("traceparent"))
            if found is not None:
                return found
    for name, value in headers:
        if name == b"traceparent":
            return TraceParent.parse(value)
    return None
