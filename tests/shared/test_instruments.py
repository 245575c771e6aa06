import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.instruments import IngressInstruments, WorkerInstruments
from shared.labels import OTHER, LabelBounds
from shared.metrics import Metrics

V = "2025-11-25"


@dataclass(frozen=True)
class Entry:
    name: str
    prefix: str
    tools: list[dict[str, Any]]
    prompts: list[dict[str, Any]]


def catalog(*servers: str) -> list[Entry]:
    return [Entry(s, s, [{"name": "list"}], [{"name": "triage"}]) for s in servers]


def samples(m: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def ingress() -> tuple[Metrics, IngressInstruments]:
    m = Metrics("ingress")
    instruments = IngressInstruments(m, LabelBounds())
    instruments.catalog_changed(catalog("gazelle", "graveler"))
    return m, instruments


def test_a_routed_call_counts_once_in_each_of_its_three_families() -> None:
    m, i = ingress()
    i.routed("gazelle", "list", "x_gazelle_list", "tools/call", V, None, False, 0.004)
    i.routed("gazelle", "list", "x_gazelle_list", "tools/call", V, None, True, 0.002)
    i.routed("graveler", "", "x_graveler_triage", "prompts/get", V, -32001, False, 30.0)
    calls = samples(m, "muster_calls_total")
    assert calls == {
        (("method", "tools/call"), ("outcome", "ok"), ("server", "gazelle"), ("tool", "list")): 1.0,
        (("method", "tools/call"), ("outcome", "tool_error"), ("server", "gazelle"), ("tool", "list")): 1.0,
        (("method", "prompts/get"), ("outcome", "deadline"), ("server", "graveler"), ("tool", "")): 1.0,
    }
    counts = samples(m, "mcp_server_operation_duration_seconds_count")
    assert (
        counts[
            (
                ("error_type", "-32001"),
                ("gen_ai_prompt_name", "x_graveler_triage"),
                ("gen_ai_tool_name", ""),
                ("mcp_method_name", "prompts/get"),
                ("mcp_protocol_version", V),
            )
        ]
        == 1.0
    )
    assert sum(counts.values()) == 3
    assert sum(samples(m, "muster_call_duration_seconds_count").values()) == 3
    e2e = samples(m, "muster_call_duration_seconds_sum")
    assert e2e[(("method", "tools/call"), ("outcome", "ok"), ("server", "gazelle"))] == 0.004


def test_made_up_names_collapse_into_one_series_and_stay_out_of_the_cache() -> None:
    m, i = ingress()
    for n in range(500):
        i.routed(f"server{n}", f"tool{n}", f"x_tool{n}", f"method/{n}", f"v{n}", -40000 - n, False, 0.001)
    calls = samples(m, "muster_calls_total")
    assert calls == {(("method", OTHER), ("outcome", "upstream_error"), ("server", OTHER), ("tool", "")): 500.0}
    assert len(samples(m, "mcp_server_operation_duration_seconds_count")) == 1
    assert not i._routed


def test_requests_the_ingress_answers_itself_are_timed_by_method() -> None:
    m, i = ingress()
    i.answered("initialize", V, None, 0.001)
    i.answered("tools/call", V, -32602, 0.0005, name="x_nope")
    counts = samples(m, "mcp_server_operation_duration_seconds_count")
    assert (
        counts[
            (
                ("error_type", ""),
                ("gen_ai_prompt_name", ""),
                ("gen_ai_tool_name", ""),
                ("mcp_method_name", "initialize"),
                ("mcp_protocol_version", V),
            )
        ]
        == 1.0
    )
    assert (
        counts[
            (
                ("error_type", "-32602"),
                ("gen_ai_prompt_name", ""),
                ("gen_ai_tool_name", OTHER),
                ("mcp_method_name", "tools/call"),
                ("mcp_protocol_version", V),
            )
        ]
        == 1.0
    )


def test_a_server_that_leaves_the_catalog_takes_its_series_along() -> None:
    m, i = ingress()
    i.routed("gazelle", "list", "x_gazelle_list", "tools/call", V, None, False, 0.004)
    i.routed("graveler", "list", "x_graveler_list", "tools/call", V, None, False, 0.004)
    i.catalog_changed(catalog("graveler"))
    assert {dict(k)["server"] for k in samples(m, "muster_calls_total")} == {"graveler"}
    tools = {dict(k)["gen_ai_tool_name"] for k in samples(m, "mcp_server_operation_duration_seconds_count")}
    assert tools == {"x_graveler_list"}
    i.routed("gazelle", "list", "x_gazelle_list", "tools/call", V, None, False, 0.004)  # cached no more
    assert {dict(k)["server"] for k in samples(m, "muster_calls_total")} == {"graveler", OTHER}


def test_the_worker_records_queue_wait_and_upstream_time_and_warms_its_counters() -> None:
    m = Metrics("worker")
    w = WorkerInstruments(m, LabelBounds())
    w.catalog_changed(catalog("gazelle"))
    w.taken("gazelle", 0.002)
    w.upstream("gazelle", "tools/call", "list", V, "", 0.01)
    w.upstream("gazelle", "tools/call", "list", V, "http_503", 0.01)
    w.upstream("gazelle", "tools/call", "list", V, "free text from somewhere", 0.01)
    assert samples(m, "muster_queue_wait_seconds_count") == {(("server", "gazelle"),): 1.0}
    errors = {dict(k)["error_type"] for k in samples(m, "mcp_client_operation_duration_seconds_count")}
    assert errors == {"", "http_503", OTHER}
    assert samples(m, "muster_dead_letters_total") == {(("server", "gazelle"),): 0.0}
    assert len(samples(m, "muster_token_refreshes_total")) == 3


def per_call_microseconds(rounds: int = 5, calls: int = 20_000) -> tuple[float, float]:
    """The best of `rounds` runs of what the hot path does per call, in the ingress and in the worker."""
    _, i = ingress()
    w = WorkerInstruments(Metrics("worker"), LabelBounds())
    w.catalog_changed(catalog("gazelle", "graveler"))
    best_ingress = best_worker = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            i.routed("gazelle", "list", "x_gazelle_list", "tools/call", V, None, False, 0.004)
        best_ingress = min(best_ingress, (time.perf_counter() - start) / calls * 1e6)
        start = time.perf_counter()
        for _ in range(calls):
            w.taken("gazelle", 0.0004)
            w.upstream("gazelle", "tools/call", "list", V, "", 0.003)
        best_worker = min(best_worker, (time.perf_counter() - start) / calls * 1e6)
    return best_ingress, best_worker


def test_the_per_call_instrumentation_costs_microseconds() -> None:
    ingress_us, worker_us = per_call_microseconds()
    print(f"per call: ingress {ingress_us:.2f} µs (1 inc + 2 observes), worker {worker_us:.2f} µs (2 observes)")
    # The budget is +50 µs of CPU per call (issue 10); a shared 2-core machine measures 3-8 µs here.
    assert ingress_us + worker_us < 50


if __name__ == "__main__":
    ingress_us, worker_us = per_call_microseconds(rounds=10, calls=100_000)
    print(f"ingress {ingress_us:.2f} µs, worker {worker_us:.2f} µs per call")
