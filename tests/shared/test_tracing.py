"""The optional spans, exported to memory: a call's SERVER span at the ingress and CLIENT span at the worker form
one trace, joined only by the traceparent bytes the call carries, as between two processes."""

import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.ingress.callers import Session
from services.ingress.http import Head
from services.ingress.telemetry import Telemetry as IngressTelemetry
from services.worker.telemetry import Telemetry as WorkerTelemetry
from shared.labels import LabelBounds
from shared.messages import Call, CallReply, ReplyKind
from shared.metrics import Metrics
from shared.tracecontext import TraceParent
from shared.tracing import Tracing
from shared.upstream import Outcome

AGENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def memory() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def test_tracing_is_off_unless_asked_for() -> None:
    assert not Tracing.off().enabled and not Tracing.configured("off", "worker").enabled
    tracing = Tracing.configured("otlp", "worker")
    assert tracing.enabled
    tracing.shutdown()


def test_a_call_s_spans_at_ingress_and_worker_form_one_trace_under_the_agent_s() -> None:
    tracing, exporter = memory()
    ingress = IngressTelemetry(Metrics("ingress"), LabelBounds(), None, None, tracing)
    worker = WorkerTelemetry(Metrics("worker"), LabelBounds(), None, tracing)
    session = Session("s" * 32, "2025-11-25", {}, "anonymous")
    params = {"name": "x_alpha_get", "arguments": {}, "_meta": {"traceparent": AGENT}}
    head = Head({"method": "POST", "headers": []})
    span = ingress.begin(head, session, "tools/call", params, "alpha", "get")
    call = Call(
        call_id=b"1",
        replica=b"r",
        session=b"s",
        principal=b"anonymous",
        server=b"alpha",
        method=b"tools/call",
        params=b"{}",
        deadline_ms=0,
        safe=True,
        key=b"k",
        traceparent=span.trace.header(),  # all the worker gets of the ingress's span
        target=b"get",
    )
    request = worker.request("alpha", call, b"2025-11-25", worker.started("alpha", b"%d-0" % (time.time() * 1000)))
    (name, value), *_ = request.headers
    upstream = TraceParent.parse(value)
    request.answered(Outcome(False, b'{"content":[],"isError":true}'))
    ingress.finished(span, CallReply(b"1", ReplyKind.RESULT, b"{}"))
    client, server = exporter.get_finished_spans()
    assert (server.kind, client.kind) == (SpanKind.SERVER, SpanKind.CLIENT)
    assert server.name == "tools/call x_alpha_get" and client.name == "tools/call get"
    agent = TraceParent.parse(AGENT)
    assert agent is not None and upstream is not None and name == b"traceparent"
    assert {f"{s.context.trace_id:032x}" for s in (server, client)} == {agent.trace_id, upstream.trace_id}
    assert server.parent is not None and f"{server.parent.span_id:016x}" == agent.span_id
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert f"{client.context.span_id:016x}" == upstream.span_id  # the upstream's parent is the worker's span
    assert server.attributes is not None and server.attributes["gen_ai.tool.name"] == "x_alpha_get"
    assert client.attributes is not None and client.attributes["error.type"] == "tool_error"
    assert client.status.status_code is StatusCode.ERROR and server.status.status_code is StatusCode.UNSET
