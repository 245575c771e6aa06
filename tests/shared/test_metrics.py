import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics
from shared.metrics import CATALOGUE, IN_FLIGHT, LEADER, SERVICES, Metrics

ROOT = Path(__file__).resolve().parents[2]
# Labels that would make the series count grow with traffic rather than with the catalog.
UNBOUNDED = {
    "user",
    "principal",
    "subject",
    "email",
    "session",
    "session_id",
    "request_id",
    "rid",
    "url",
    "uri",
    "message",
    "error",
    "id",
    "pod_ip",
    "worker",
    "replica",
}


def scrape(registry: CollectorRegistry) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def test_names_are_unique_and_well_formed() -> None:
    names = [s.name for s in CATALOGUE]
    assert len(names) == len(set(names))
    for spec in CATALOGUE:
        assert re.fullmatch(r"(muster|mcp)_[a-z0-9_]+", spec.name), spec.name
        assert spec.help and spec.services, spec.name
        assert not spec.name.endswith("_total"), "prometheus-client adds _total to counters"
        if spec.kind == "histogram":
            assert spec.name.endswith("_seconds") and list(spec.buckets) == sorted(set(spec.buckets))
        else:
            assert not spec.buckets


def test_no_label_names_a_user_a_session_or_a_request() -> None:
    for spec in CATALOGUE:
        assert not UNBOUNDED & set(spec.labels), spec.name


def test_the_otel_histograms_follow_the_semantic_conventions() -> None:
    server, client = metrics.SERVER_OPERATION, metrics.CLIENT_OPERATION
    assert server.name == "mcp_server_operation_duration_seconds"
    assert client.name == "mcp_client_operation_duration_seconds"
    expected = {"mcp_method_name", "gen_ai_tool_name", "error_type", "mcp_protocol_version"}
    assert expected <= set(server.labels) and expected <= set(client.labels)
    boundaries = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
    assert server.buckets == boundaries and client.buckets == boundaries


def test_importing_the_catalogue_registers_nothing() -> None:
    code = (
        "from prometheus_client import REGISTRY\n"
        "before = set(REGISTRY._names_to_collectors)\n"
        "import shared.metrics, shared.instruments, shared.queue_metrics, shared.health, shared.logs\n"
        "assert set(REGISTRY._names_to_collectors) == before, set(REGISTRY._names_to_collectors) - before\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_exports_its_share_of_the_catalogue(service: metrics.Service) -> None:
    m = Metrics(service, version="1.2.3")
    families = scrape(m.registry)
    wanted = {s for s in CATALOGUE if service in s.services and s.source != "valkey"}
    for spec in wanted:
        family_name = spec.name  # the parser names counter families without _total
        assert family_name in families, family_name
        assert families[family_name].type == spec.kind
    exported = {n for n in families if n.startswith(("muster_", "mcp_"))}
    assert exported == {s.name for s in wanted}
    info = families["muster_build_info"].samples
    assert [(s.labels, s.value) for s in info] == [({"service": service, "version": "1.2.3"}, 1.0)]


def test_two_processes_worth_of_metrics_live_side_by_side() -> None:
    a, b = Metrics("worker"), Metrics("worker")
    a.counter(metrics.DEAD_LETTERS).labels("s").inc()
    assert b.counter(metrics.DEAD_LETTERS).labels("s")._value.get() == 0


def test_a_sampled_gauge_reads_its_source_at_each_scrape() -> None:
    m = Metrics("worker")
    running = {"a": 1}
    m.sample(IN_FLIGHT, lambda: {(k,): float(v) for k, v in running.items()})
    assert [s.value for s in scrape(m.registry)["muster_calls_in_flight"].samples] == [1.0]
    running["a"], running["b"] = 0, 5
    samples = scrape(m.registry)["muster_calls_in_flight"].samples
    assert {s.labels["server"]: s.value for s in samples} == {"a": 0.0, "b": 5.0}


def test_a_metric_of_another_service_or_kind_is_refused() -> None:
    m = Metrics("discovery")
    with pytest.raises(KeyError, match="not exported by the discovery"):
        m.counter(metrics.CALLS)
    with pytest.raises(TypeError):
        m.gauge(LEADER)  # sampled: it has a source, not a setter
    with pytest.raises(TypeError):
        m.histogram(metrics.UPSTREAM_CONNECT_ERRORS)


def test_forget_removes_the_series_of_a_label_value_that_left() -> None:
    m = Metrics("worker")
    dead = m.counter(metrics.DEAD_LETTERS)
    dead.labels("stays").inc()
    dead.labels("goes").inc(2)
    m.histogram(metrics.QUEUE_WAIT).labels("goes").observe(0.1)
    assert m.forget("server", lambda s: s == "stays") == 2
    text = generate_latest(m.registry).decode()
    assert 'server="stays"' in text and 'server="goes"' not in text


def test_docs_list_every_metric_with_its_type_and_labels() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    rows = {m.group(1): m for m in re.finditer(r"^\| `([a-z0-9_]+)` \| (\w+) \| ([^|]*) \|", text, re.MULTILINE)}
    for spec in CATALOGUE:
        shown = next(iter(sorted(spec.sample_names()))) if spec.kind == "counter" else spec.name
        assert shown in rows, f"{shown} is missing from docs/metrics.md"
        row = rows[shown]
        assert row.group(2) == spec.kind
        assert set(re.findall(r"`([a-z_]+)`", row.group(3))) == set(spec.labels), shown
    assert len(rows) == len(CATALOGUE)
