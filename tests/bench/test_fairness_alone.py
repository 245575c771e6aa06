"""`python -m bench --only fairness` runs the fairness scenarios alone with the share from the environment. A file of
its own, so that the test runner can put it beside, not after, the harness's other long tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_the_fairness_scenario_alone_runs_with_the_share_set_in_the_environment(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "fairness", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "MUSTER_INGRESS_FAIR_SHARE": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads((tmp_path / "fairness.json").read_text())
    assert found["share"] == "2"
    assert [len(found["fairness"]), len(found["fairness_remote"])] == [1, 1]
    assert all(run["flood_failed"] == 0 and run["ratio"] > 0 for run in found["fairness"] + found["fairness_remote"])
    assert found["fairness_remote"][0]["upstream_seconds"] == 0.05
