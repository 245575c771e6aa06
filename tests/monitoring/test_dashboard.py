"""The Grafana dashboard: well-formed, every query valid PromQL (promtool parses them as recording rules), and
shipped as a ConfigMap with the grafana_dashboard label by the monitoring kustomization."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.conftest import MONITORING


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return board


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] == "muster"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, p["title"]
        cells |= area
    for p in panels():
        assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]


def test_the_dashboard_covers_fleet_traffic_errors_latency_queue_and_workers() -> None:
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows == ["Fleet", "Traffic", "Errors", "Latency", "Queue", "Workers and sessions"]
    text = " ".join(queries())
    for needed in ("muster_server_state", "muster_calls_total", "muster_call_duration_seconds_bucket",
                   "muster_stream_lag", "muster_calls_in_flight", 'service="worker"'):  # fmt: skip
        assert needed in text


def test_every_query_is_valid_promql(promtool: Path, tmp_path: Path) -> None:
    # Grafana's variables, as Grafana would substitute them
    def grafana(expr: str) -> str:
        return expr.replace("$__rate_interval", "1m").replace('=~"$server"', '=~".*"')

    exprs = [grafana(e) for e in queries()]
    assert not [e for e in exprs if "$" in e]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in
                                                         enumerate(exprs)]}]}  # fmt: skip
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        [str(promtool), "check", "rules", "dashboard.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_server_variable_lists_servers_and_every_per_server_query_honours_it() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["server"]["definition"] == "label_values(muster_calls_total, server)"
    graphs = [t["expr"] for p in panels() if p["type"] != "stat" for t in p["targets"]]  # stats count the fleet
    per_server = [e for e in graphs if re.search(r"by \([^)]*\bserver\b", e)]
    assert len(per_server) > 10
    for expr in per_server:
        assert 'server=~"$server"' in expr, expr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not on this machine")
def test_kustomize_ships_the_dashboard_as_a_labelled_configmap() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(built.stdout)}
    config_map = objects[("ConfigMap", "muster-grafana-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "muster"
    assert json.loads(config_map["data"]["muster.json"]) == dashboard()
    assert {k for k, _ in objects} == {"ConfigMap", "ServiceMonitor", "PrometheusRule"}
    monitors = {n: o for (k, n), o in objects.items() if k == "ServiceMonitor"}
    assert set(monitors) == {"muster-ingress", "muster-worker", "muster-discovery"}
    for name, monitor in monitors.items():
        assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
