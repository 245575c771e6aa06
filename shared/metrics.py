"""Every metric muster exports: names, help, types, label names and buckets, in one catalogue.

Nothing is registered at import time. A process builds its share of the catalogue into its own registry:
`Metrics("worker")` holds the counters, gauges and histograms the worker exports; `Metrics.sample` gives a
sampled gauge the callable it reads at scrape time; the queue gauges (`VALKEY` specs) are read from Valkey at
scrape time by `shared.queue_metrics.QueueCollector`. docs/metrics.md is the operator's copy of this table.

Label cardinality is bounded by construction; every label takes its values from a closed set:
    server                  servers in the catalog, else "_OTHER" (shared.labels.LabelBounds.server)
    tool, gen_ai_tool_name  tools in the catalog (upstream names and exposed names), else "_OTHER"
    gen_ai_prompt_name      prompts in the catalog, else "_OTHER"
    method, mcp_method_name the MCP methods of the spec (shared.labels.METHODS), else "_OTHER"
    mcp_protocol_version    released protocol versions (shared.labels.PROTOCOL_VERSIONS), else "_OTHER"
    error_type              JSON-RPC codes muster knows, "tool_error", transport classes, else "_OTHER"
    outcome, reason, class, state, kind, service   fixed vocabularies listed in shared.labels
No label ever carries a user, principal, session id, request id, URL or free text: with 50 servers of 20 tools
the largest family (mcp_server_operation_duration_seconds) stays in the low thousands of series.

The OpenTelemetry MCP conventions (semantic-conventions-genai, docs/gen-ai/mcp.md) appear in their Prometheus
form: `mcp.server.operation.duration` -> `mcp_server_operation_duration_seconds`, attribute dots -> underscores,
with the convention's bucket boundaries. `error_type` is "" on success (the convention sets it only on failure),
the JSON-RPC code as a string on an error, "tool_error" for a result with isError. muster adds `server` to the
client-side histogram, whose time is the upstream time of a call.
"""

import importlib.metadata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Kind = Literal["counter", "gauge", "histogram"]
Service = Literal["ingress", "worker", "discovery"]
Source = Literal["event", "sampled", "valkey"]
SERVICES: Final[tuple[Service, ...]] = ("ingress", "worker", "discovery")


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family.

    `name` is the family name; a counter's samples carry `_total`, a histogram's `_bucket`, `_sum` and `_count`.
    `source`: "event" metrics are updated where things happen, "sampled" gauges read in-process state when
    scraped, "valkey" gauges are read from Valkey when scraped.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    services: tuple[Service, ...] = ()
    buckets: tuple[float, ...] = ()
    source: Source = "event"

    def sample_names(self) -> frozenset[str]:
        """The names the family's samples carry in the exposition, which is what PromQL selects."""
        if self.kind == "counter":
            return frozenset({self.name + "_total"})
        if self.kind == "histogram":
            return frozenset({self.name + "_bucket", self.name + "_sum", self.name + "_count"})
        return frozenset({self.name})


# The convention's ExplicitBucketBoundaries for mcp.*.operation.duration.
SEMCONV_BUCKETS: Final = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# muster's own latencies start below a millisecond: the pipeline adds about one (README, Performance).
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
LIST_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_SEMCONV_LABELS: Final = (
    "mcp_method_name",
    "gen_ai_tool_name",
    "gen_ai_prompt_name",
    "error_type",
    "mcp_protocol_version",
)

# OpenTelemetry MCP conventions
SERVER_OPERATION = Spec(
    "mcp_server_operation_duration_seconds",
    "histogram",
    "MCP request duration at the ingress, from receipt until the result or error is sent (OTel "
    "mcp.server.operation.duration); gen_ai_tool_name is the name the agent called",
    labels=_SEMCONV_LABELS,
    services=("ingress",),
    buckets=SEMCONV_BUCKETS,
)
CLIENT_OPERATION = Spec(
    "mcp_client_operation_duration_seconds",
    "histogram",
    "MCP request duration at the worker toward the upstream server, from send until the response (OTel "
    "mcp.client.operation.duration): the upstream time of a call; gen_ai_tool_name is the upstream's own name",
    labels=("server", *_SEMCONV_LABELS),
    services=("worker",),
    buckets=SEMCONV_BUCKETS,
)

# Calls through the pipeline
CALLS = Spec(
    "muster_calls",
    "counter",
    "Calls routed to an upstream server, by the outcome their caller got (shared.labels.OUTCOMES)",
    labels=("server", "tool", "method", "outcome"),
    services=("ingress",),
)
CALL_DURATION = Spec(
    "muster_call_duration_seconds",
    "histogram",
    "End-to-end time of a routed call at the ingress: from acceptance until its outcome is sent",
    labels=("server", "method", "outcome"),
    services=("ingress",),
    buckets=LATENCY_BUCKETS,
)
QUEUE_WAIT = Spec(
    "muster_queue_wait_seconds",
    "histogram",
    "Time a call waited in its server's stream before a worker took it",
    labels=("server",),
    services=("worker",),
    buckets=LATENCY_BUCKETS,
)
REJECTIONS = Spec(
    "muster_rejections",
    "counter",
    "Calls refused at once because a queue was full (backpressure), by reason: queue_full, replica_full",
    labels=("server", "reason"),
    services=("ingress",),
)
REDELIVERIES = Spec(
    "muster_redeliveries",
    "counter",
    "Calls taken over from a worker that died",
    labels=("server",),
    services=("worker",),
)
DEAD_LETTERS = Spec(
    "muster_dead_letters",
    "counter",
    "Calls moved to the dead-letter stream after too many deliveries",
    labels=("server",),
    services=("worker",),
)
IN_FLIGHT = Spec(
    "muster_calls_in_flight",
    "gauge",
    "Calls this worker runs at their upstream server right now",
    labels=("server",),
    services=("worker",),
    source="sampled",
)
UNSETTLED_OUTCOMES = Spec(
    "muster_worker_unsettled_outcomes",
    "gauge",
    "Outcomes of calls that ran, waiting for Valkey to take them (written as soon as it does; not ready meanwhile)",
    labels=(),
    services=("worker",),
    source="sampled",
)
PENDING_CALLS = Spec(
    "muster_ingress_pending_calls",
    "gauge",
    "Calls this ingress replica waits for an outcome of",
    labels=(),
    services=("ingress",),
    source="sampled",
)

# Upstream connections
UPSTREAM_SESSIONS = Spec(
    "muster_upstream_sessions",
    "gauge",
    "Upstream MCP sessions open in this worker's pool",
    labels=("server",),
    services=("worker",),
    source="sampled",
)
CIRCUIT_STATE = Spec(
    "muster_upstream_circuit_state",
    "gauge",
    "1 for each server, its label `state` the state of this worker's circuit breaker to it: closed, open (calls "
    "fail fast with -32004), half-open (one probe call goes through)",
    labels=("server", "state"),
    services=("worker",),
    source="sampled",
)
CIRCUIT_OPENINGS = Spec(
    "muster_upstream_circuit_openings",
    "gauge",
    "How often this worker's circuit breaker to each server opened since the worker started",
    labels=("server",),
    services=("worker",),
    source="sampled",
)
UPSTREAM_INITIALIZATIONS = Spec(
    "muster_upstream_initializations",
    "counter",
    "Upstream sessions opened, by reason: new (first use), lost (the server forgot the session)",
    labels=("server", "reason"),
    services=("worker",),
)
UPSTREAM_CONNECT_ERRORS = Spec(
    "muster_upstream_connect_errors",
    "counter",
    "Failures to reach an upstream server, by class: refused, timeout, tls, dns, reset, network, protocol, "
    "http_<status>",
    labels=("server", "class"),
    services=("worker", "discovery"),
)

# Credentials
TOKEN_REFRESHES = Spec(
    "muster_token_refreshes",
    "counter",
    "Upstream token refreshes, by outcome: ok, rejected (the grant is gone: the user must sign in), error",
    labels=("server", "outcome"),
    services=("worker",),
)
TOKEN_EXCHANGES = Spec(
    "muster_token_exchanges",
    "counter",
    "RFC 8693 token exchanges for an upstream server, by outcome: ok, rejected, error",
    labels=("server", "outcome"),
    services=("worker",),
)

# Discovery
SERVER_STATE = Spec(
    "muster_server_state",
    "gauge",
    "1 for each server, its label `state` the state discovery last saw (one series per server; leader only)",
    labels=("server", "state"),
    services=("discovery",),
    source="sampled",
)
CATALOG_ENTRIES = Spec(
    "muster_catalog_entries",
    "gauge",
    "Entries in the catalog this process serves from, by kind: tools, resources, resource_templates, prompts",
    labels=("kind",),
    services=("ingress", "discovery"),
    source="sampled",
)
LIST_DURATION = Spec(
    "muster_list_duration_seconds",
    "histogram",
    "Time discovery took to list one server's capabilities, by outcome: ok, error",
    labels=("server", "outcome"),
    services=("discovery",),
    buckets=LIST_BUCKETS,
)
LEADER = Spec(
    "muster_discovery_leader",
    "gauge",
    "1 while this discovery replica holds the leader lease",
    labels=(),
    services=("discovery",),
    source="sampled",
)

# Sessions
NOTIFICATIONS = Spec(
    "muster_notifications_sent",
    "counter",
    "Notifications sent to agents, by method",
    labels=("method",),
    services=("ingress",),
)
SESSIONS_OPEN = Spec(
    "muster_sessions_open",
    "gauge",
    "MCP sessions this ingress replica holds in its cache (a session may be held by several replicas)",
    labels=(),
    services=("ingress",),
    source="sampled",
)
GET_STREAMS_OPEN = Spec(
    "muster_get_streams_open",
    "gauge",
    "GET event streams open on this ingress replica",
    labels=(),
    services=("ingress",),
    source="sampled",
)

# Process
BUILD_INFO = Spec(
    "muster_build_info",
    "gauge",
    "1 per process, labelled with its service and muster's version; count() of it is the processes alive",
    labels=("service", "version"),
    services=SERVICES,
)

# Read from Valkey when scraped (shared.queue_metrics.QueueCollector), one series per server's call stream.
QUEUE_DEPTH = Spec(
    "muster_queue_depth",
    "gauge",
    "Calls accepted for a server and not yet acknowledged: the number its queue bound is checked against",
    labels=("server",),
    services=("discovery",),
    source="valkey",
)
STREAM_LENGTH = Spec(
    "muster_stream_length",
    "gauge",
    "Entries in a server's call stream (XLEN), acknowledged ones included until trimmed",
    labels=("server",),
    services=("discovery",),
    source="valkey",
)
STREAM_PENDING = Spec(
    "muster_stream_pending",
    "gauge",
    "Entries of a server's call stream delivered to a worker and not yet acknowledged (XINFO GROUPS pending)",
    labels=("server",),
    services=("discovery",),
    source="valkey",
)
STREAM_LAG = Spec(
    "muster_stream_lag",
    "gauge",
    "Entries of a server's call stream not yet delivered to any worker (XINFO GROUPS lag)",
    labels=("server",),
    services=("discovery",),
    source="valkey",
)
STREAM_CONSUMERS = Spec(
    "muster_stream_consumers",
    "gauge",
    "Workers registered as consumers of a server's call stream",
    labels=("server",),
    services=("discovery",),
    source="valkey",
)
DEAD_LETTER_LENGTH = Spec(
    "muster_dead_letter_length",
    "gauge",
    "Entries in the dead-letter stream",
    labels=(),
    services=("discovery",),
    source="valkey",
)
VALKEY_UP = Spec(
    "muster_valkey_up",
    "gauge",
    "1 if the last scrape could read the queue gauges from Valkey, else 0 (and the queue gauges are absent)",
    labels=(),
    services=("discovery",),
    source="valkey",
)

CATALOGUE: Final[tuple[Spec, ...]] = (
    SERVER_OPERATION, CLIENT_OPERATION,
    CALLS, CALL_DURATION, QUEUE_WAIT, REJECTIONS, REDELIVERIES, DEAD_LETTERS, IN_FLIGHT, UNSETTLED_OUTCOMES,
    PENDING_CALLS,
    UPSTREAM_SESSIONS, CIRCUIT_STATE, CIRCUIT_OPENINGS, UPSTREAM_INITIALIZATIONS, UPSTREAM_CONNECT_ERRORS,
    TOKEN_REFRESHES, TOKEN_EXCHANGES,
    SERVER_STATE, CATALOG_ENTRIES, LIST_DURATION, LEADER,
    NOTIFICATIONS, SESSIONS_OPEN, GET_STREAMS_OPEN,
    BUILD_INFO,
    QUEUE_DEPTH, STREAM_LENGTH, STREAM_PENDING, STREAM_LAG, STREAM_CONSUMERS, DEAD_LETTER_LENGTH, VALKEY_UP,
)  # fmt: skip

Samples = Mapping[tuple[str, ...], float]
SampleSource = Callable[[], Samples]
Instrument = Counter | Gauge | Histogram


class SampledGauge(Collector):
    """A gauge whose values come from a callable at scrape time, so that nothing is updated per event."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.source: SampleSource = dict

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.spec.name, self.spec.help, labels=self.spec.labels)
        for labels, value in self.source().items():
            family.add_metric(labels, value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.spec.name, self.spec.help, labels=self.spec.labels)


def _instrument(spec: Spec, registry: CollectorRegistry) -> Instrument:
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind == "histogram":
        return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)
    return Gauge(spec.name, spec.help, spec.labels, registry=registry)


class Metrics:
    """The metrics one process exports, built into a registry of its own.

    Counters and histograms (`counter`, `histogram`) are for the code where things happen; on the per-call path
    use `shared.instruments`, which caches label children. Sampled gauges get their source through `sample`.
    """

    def __init__(self, service: Service, registry: CollectorRegistry | None = None, *, version: str = "") -> None:
        # _created series double the series count and no muster query reads them.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.service = service
        self.registry = registry if registry is not None else CollectorRegistry()
        self.specs = tuple(s for s in CATALOGUE if service in s.services and s.source != "valkey")
        self._instruments: dict[str, Instrument] = {}
        self._sampled: dict[str, SampledGauge] = {}
        for spec in self.specs:
            if spec.source == "sampled":
                self._sampled[spec.name] = gauge = SampledGauge(spec)
                self.registry.register(gauge)
            else:
                self._instruments[spec.name] = _instrument(spec, self.registry)
        cast(Gauge, self._instruments[BUILD_INFO.name]).labels(service, version or _version()).set(1)

    def counter(self, spec: Spec) -> Counter:
        return cast(Counter, self._get(spec, "counter"))

    def histogram(self, spec: Spec) -> Histogram:
        return cast(Histogram, self._get(spec, "histogram"))

    def gauge(self, spec: Spec) -> Gauge:
        return cast(Gauge, self._get(spec, "gauge"))

    def sample(self, spec: Spec, source: SampleSource) -> None:
        """Read this gauge from `source` at every scrape: {label values: value}."""
        self._sampled[spec.name].source = source

    def forget(self, label: str, keep: Callable[[str], bool]) -> int:
        """Removes the series whose `label` value is no longer kept, e.g. of a server that left the catalog."""
        removed = 0
        for name, instrument in self._instruments.items():
            spec = next(s for s in self.specs if s.name == name)
            if label not in spec.labels:
                continue
            index = spec.labels.index(label)
            for values in list(_children(instrument, spec)):
                if not keep(values[index]):
                    instrument.remove(*values)
                    removed += 1
        return removed

    def _get(self, spec: Spec, kind: Kind) -> Instrument:
        if spec.kind != kind or spec.source != "event":
            raise TypeError(f"{spec.name} is a {spec.source} {spec.kind}, not an event {kind}")
        try:
            return self._instruments[spec.name]
        except KeyError:
            raise KeyError(f"{spec.name} is not exported by the {self.service}") from None


def _children(instrument: Instrument, spec: Spec) -> Iterable[tuple[str, ...]]:
    seen: set[tuple[str, ...]] = set()
    for family in instrument.collect():
        for sample in family.samples:
            values = tuple(sample.labels[n] for n in spec.labels)
            if values not in seen:
                seen.add(values)
                yield values


def _version() -> str:
    try:
        return importlib.metadata.version("muster")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
