"""The alert rules: valid for promtool, unit-tested by promtool, aggregated over labels that survive a rollout,
and each with a runbook section."""

import re
import subprocess
from pathlib import Path

import yaml

from tests.monitoring.conftest import ROOT, alerts, unit_tests

ROLLOUT_LABELS = {"pod", "instance", "container", "endpoint", "job", "namespace", "service"}


def run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_rules_pass_promtool_check(promtool: Path, rules_dir: Path) -> None:
    checked = run(promtool, "check", "rules", "rules.yaml", cwd=rules_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout


def test_each_alert_fires_on_its_series_and_stays_silent_through_a_rollout(promtool: Path, rules_dir: Path) -> None:
    names = [t.name for t in unit_tests()]
    tested = run(promtool, "test", "rules", *names, cwd=rules_dir)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(names)


def test_every_alert_has_a_firing_case_and_a_silent_rollout_case() -> None:
    fires: set[str] = set()
    silent_through_rollout: set[str] = set()
    for path in unit_tests():
        for case in yaml.safe_load(path.read_text())["tests"]:
            labels = " ".join(s["series"] for s in case["input_series"])
            for check in case["alert_rule_test"]:
                if check["exp_alerts"]:
                    fires.add(check["alertname"])
                elif "rollout" in case["name"] and len(set(re.findall(r'pod="([^"]+)"', labels))) > 1:
                    silent_through_rollout.add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert fires == names
    assert silent_through_rollout == names


def test_no_alert_is_grouped_by_a_label_that_a_rollout_changes() -> None:
    for alert in alerts():
        expr = alert["expr"]
        for clause in re.findall(r"\b(?:by|on|group_left|group_right)\s*\(([^)]*)\)", expr):
            grouped = {label.strip() for label in clause.split(",")}
            assert not grouped & ROLLOUT_LABELS, f"{alert['alert']} keeps {grouped & ROLLOUT_LABELS}"
        assert not re.search(r"\bwithout\s*\(", expr), f"{alert['alert']}: without() keeps pod and instance"
        # a selector without an aggregation around it keeps every label of its series, pod and instance too
        assert re.search(r"\b(sum|max|min|avg|count)\s*(by\s*\([^)]*\)\s*)?\(", expr), alert["alert"]


def test_every_alert_says_how_bad_what_and_where_to_read_on() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", runbook, re.M)}
    for alert in alerts():
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        assert re.fullmatch(r"\d+m", alert["for"]), alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor in anchors, f"{alert['alert']}: no section #{anchor}"
    assert len(anchors) == len(alerts())
