"""Every metric name the alerts, their unit tests and the dashboard use is one that shared/metrics.py defines."""

import pytest

from shared.metrics import CATALOGUE
from tests.monitoring.conftest import alerts, unit_tests
from tests.monitoring.promql import all_names, metric_names
from tests.monitoring.test_dashboard import dashboard, queries

DEFINED = frozenset().union(*(spec.sample_names() for spec in CATALOGUE))


def test_the_rules_use_only_defined_metrics() -> None:
    used = all_names(a["expr"] for a in alerts())
    assert used, "no metric found in the rules: the parser is broken"
    assert not set(used) - DEFINED, {n: used[n] for n in set(used) - DEFINED}


def test_the_dashboard_uses_only_defined_metrics() -> None:
    variables = [v["definition"] for v in dashboard()["templating"]["list"] if "definition" in v]
    used = all_names([*queries(), *variables])
    assert not set(used) - DEFINED, {n: used[n] for n in set(used) - DEFINED}
    assert len(used) > 20


def test_the_unit_tests_feed_the_alerts_series_that_muster_exports() -> None:
    import yaml

    series = [s["series"] for path in unit_tests() for case in yaml.safe_load(path.read_text())["tests"]
              for s in case["input_series"]]  # fmt: skip
    assert not set(all_names(series)) - DEFINED


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (server) (rate(muster_calls_total{outcome!~"ok|x"}[5m]))', {"muster_calls_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval])))", {"a_bucket"}),
        ("(max(muster_discovery_leader) or vector(0)) < 1", {"muster_discovery_leader"}),
        ("deriv(max by (server) (lag)[10m:1m]) > 0 and on (server) other offset 5m", {"lag", "other"}),
        ('label_replace(up{job="x"}, "dst", "$1", "src", "(.*)") unless ignoring (pod) b', {"up", "b"}),
        ("label_values(muster_calls_total, server)", {"muster_calls_total"}),
        ("sum(rate(x[5m])) by (server) / ignoring(le) group_left(tool) y", {"x", "y"}),
        ("topk(10, nonsense_total) > bool 1e3", {"nonsense_total"}),
    ],
)
def test_the_parser_finds_every_metric_name(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_histogram_is_used_by_its_series_names_and_a_counter_with_total() -> None:
    assert "muster_call_duration_seconds" not in DEFINED and "muster_call_duration_seconds_bucket" in DEFINED
    assert "muster_calls" not in DEFINED and "muster_calls_total" in DEFINED
