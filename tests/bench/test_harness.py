"""The benchmark harness runs end to end. It measures nothing: benchmarks are not timed tests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import UPSTREAMS, Harness
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PIPE_BUFFER = 65_536


@pytest.mark.timeout(300)
def test_the_harness_loads_every_target_and_writes_its_report(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-peer", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for upstream in ("k8s", "everything"):
        targets = results["throughput"][upstream]
        assert set(targets) == {"direct", "muster 1 worker", "muster 2 workers", "muster, telemetry off"}
        for by_callers in targets.values():
            for run in by_callers.values():
                assert run["calls"] > 0 and run["failed"] == 0
        assert results["sequential"][upstream]["muster 1 worker"]["p50"] > 0
    muster = results["throughput"]["k8s"]["muster 1 worker"]["4"]["cpu_ms_per_call"]
    assert muster["ingress"] > 0 and muster["worker"] > 0 and muster["valkey"] >= 0
    assert all(run["failed"] == 0 for run in results["burst"].values())
    for fair in (results["fairness"], results["fairness_remote"]):  # the stand-in at its own speed, and at 50 ms
        assert fair["flood_failed"] == 0 and fair["ratio"] > 0
    assert results["fairness_remote"]["upstream_seconds"] == 0.05 and results["fairness_remote"]["idle_p50"] > 50
    assert [v["name"] for v in results["scripts"]] == ["before", "after", "after, one principal beyond its share"]
    for upstream in ("k8s", "everything"):  # per-agent upstream sessions against the shared pool
        modes = results["sessions"][upstream]
        assert set(modes) == {"agent sessions", "shared pool"}
        assert all(run["calls"] > 0 and run["failed"] == 0 for runs in modes.values() for run in runs.values())
    page = (tmp_path / "README.md").read_text()
    assert results["machine"]["commit"] in page and "## Burst" in page and "## Upstream sessions" in page
    assert "## Fairness" in page and "## The queue's scripts" in page
    assert "## Sign-in" in page
    table = results["identity"]["cpu"]  # the sign-in scenario: muster with auth on beside auth off
    assert set(table) == {"muster 1 worker", "auth, no downstream auth", "auth, forwardToken"}
    for loads in table.values():
        for row in loads.values():
            assert row["failed"] == 0 and row["muster_cpu_ms_per_call"] > 0 and "vs_auth_off_ms" in row


@pytest.mark.timeout(300)
def test_load_reports_larger_than_a_pipe_buffer_reach_the_harness_whole(tmp_path: Path) -> None:
    # Two generators whose reports each outgrow a pipe's buffer: the second one's used to be cut at 64 KiB
    # while the harness read the first one's.
    harness = Harness(tmp_path)
    try:
        harness.start(peer=False, muster=False)  # only the direct target is loaded
        direct = next(t for t in harness.targets if t.name == "direct")
        everything = next(u for u in UPSTREAMS if u.name == "everything")
        result = harness.load(direct, everything, callers=16, calls=1400, processes=2)
    finally:
        harness.stop()
    assert result["calls"] == 16 * 1400 and result["failed"] == 0
    assert min((tmp_path / f"load-{n}.json").stat().st_size for n in range(2)) > PIPE_BUFFER
