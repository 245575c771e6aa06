"""Optional OpenTelemetry spans of every call: a SERVER span at the ingress, a CLIENT span at the worker around
the request to the upstream, joined by the traceparent the call carries (shared/tracecontext.py).

Off by default, and then free: `Tracing.off()` has `enabled` False, and the per-call code tests that one
attribute before it touches anything here; the OpenTelemetry SDK is not even imported. On (`MUSTER_TRACING=otlp`,
with the `tracing` extra installed), spans go through a batch processor to the OTLP/HTTP exporter, configured by
the standard OTEL_EXPORTER_OTLP_* variables. Names and attributes follow the MCP semantic conventions
(`tools/call <tool>`, `mcp.method.name`, `gen_ai.tool.name`, `mcp.protocol.version`, `error.type`).
"""

from typing import TYPE_CHECKING, Any

from shared.tracecontext import TraceParent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

Span = Any  # an opentelemetry.trace.Span; typed loosely so that nothing imports OpenTelemetry while tracing is off


class TracingUnavailable(Exception):
    """Tracing was asked for, but the OpenTelemetry SDK is not installed (pip install 'muster[tracing]')."""


class Tracing:
    def __init__(self, provider: "TracerProvider | None" = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self._tracer: Any = None
        self._api: Any = None
        if provider is not None:
            from opentelemetry import trace

            self._tracer, self._api = provider.get_tracer("muster"), trace

    @classmethod
    def off(cls) -> "Tracing":
        return cls()

    @classmethod
    def otlp(cls, service: str) -> "Tracing":
        """Spans exported over OTLP/HTTP to where OTEL_EXPORTER_OTLP_ENDPOINT (or its _TRACES_ form) says."""
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise TracingUnavailable("MUSTER_TRACING=otlp needs: pip install 'muster[tracing]'") from exc
        provider = TracerProvider(resource=Resource.create({"service.name": f"muster-{service}"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    @classmethod
    def configured(cls, mode: str, service: str) -> "Tracing":
        return cls.otlp(service) if mode == "otlp" else cls.off()

    def server(self, method: str, name: str, protocol: str, parent: TraceParent | None) -> tuple[Span, TraceParent]:
        """The ingress's span of one call, and the context the call carries on (its span as the parent)."""
        attributes = {"mcp.method.name": method, "mcp.protocol.version": protocol}
        return self._start(method, name, "SERVER", attributes, parent)

    def client(
        self, server: str, method: str, name: str, protocol: str, parent: TraceParent | None
    ) -> tuple[Span, TraceParent]:
        """The worker's span of one request to an upstream, and the traceparent the request carries."""
        attributes = {"mcp.method.name": method, "mcp.protocol.version": protocol, "server.address": server}
        return self._start(method, name, "CLIENT", attributes, parent)

    def _start(
        self, method: str, name: str, kind: str, attributes: dict[str, str], parent: TraceParent | None
    ) -> tuple[Span, TraceParent]:
        api = self._api
        context = None
        if parent is not None:
            remote = api.SpanContext(
                int(parent.trace_id, 16), int(parent.span_id, 16), True, api.TraceFlags(int(parent.flags, 16))
            )
            context = api.set_span_in_context(api.NonRecordingSpan(remote))
        if method == "tools/call" and name:
            attributes = {**attributes, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        elif method == "prompts/get" and name:
            attributes = {**attributes, "gen_ai.prompt.name": name}
        span = self._tracer.start_span(
            f"{method} {name}" if name else method,
            context=context,
            kind=getattr(api.SpanKind, kind),
            attributes=attributes,
        )
        own = span.get_span_context()
        return span, TraceParent(f"{own.trace_id:032x}", f"{own.span_id:016x}", f"{int(own.trace_flags):02x}")

    def end(self, span: Span, error_type: str) -> None:
        """Ends a span; `error_type` is "" for success, else the label the metrics give the failure."""
        if error_type:
            span.set_attribute("error.type", error_type)
            span.set_status(self._api.StatusCode.ERROR)
        span.end()

    def shutdown(self) -> None:
        """Exports what is still buffered; called once when the service stops."""
        if self.provider is not None:
            self.provider.shutdown()
