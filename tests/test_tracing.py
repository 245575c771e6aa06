"""MUSTER_TRACING=otlp across real processes: the ingress's SERVER span and the worker's CLIENT span of a call
reach an OTLP/HTTP receiver as one trace, the agent's, and the upstream gets the worker's span as its parent."""

import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import HEADERS, Muster, initialize, make_muster, result

pytestmark = pytest.mark.slow

AGENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver on 127.0.0.1 that keeps every span it is sent, with its service's name."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[tuple[str, Span]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.server.lock:
            for resource in request.resource_spans:
                service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
                self.server.spans.extend((service, s) for scope in resource.scope_spans for s in scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def muster(tmp_path: Path, receiver: Receiver) -> Iterator[Muster]:
    for m in make_muster(tmp_path):
        m.env |= {
            "MUSTER_TRACING": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon after the call rather than every 5 s
        }
        m.standin("alpha")
        m.discovery()
        m.worker()
        m.ingress()
        m.wait_tools(6)
        yield m


def test_a_call_s_spans_reach_the_collector_as_one_trace_under_the_agent_s(muster: Muster, receiver: Receiver) -> None:
    session = initialize(muster.url())
    headers = {**HEADERS, "Mcp-Session-Id": session, "traceparent": AGENT}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "x_alpha_get", "arguments": {"resourceType": "namespaces", "name": "default"}},
    }
    assert "result" in result(httpx.post(muster.url(), headers=headers, json=body, timeout=30))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with receiver.lock:
            found = {service: span for service, span in receiver.spans if span.name == "tools/call x_alpha_get"}
            found |= {service: span for service, span in receiver.spans if span.name == "tools/call get"}
        if len(found) == 2:
            break
        time.sleep(0.1)
    server, client = found["muster-ingress"], found["muster-worker"]
    assert (server.kind, client.kind) == (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT)
    assert server.trace_id.hex() == client.trace_id.hex() == AGENT[3:35]
    assert server.parent_span_id.hex() == AGENT[36:52] and client.parent_span_id == server.span_id
    (sent,) = muster.standins["alpha"].stats()["traceparents"]
    assert sent == f"00-{AGENT[3:35]}-{client.span_id.hex()}-01"
