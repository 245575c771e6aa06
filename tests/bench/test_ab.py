"""bench.ab runs two revisions side by side end to end. It measures nothing: --quick is a tiny workload."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import revision
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SHAPES = "414b5ad"  # issue 13 renamed the worker's id variable (and the discovery's folder variable)


def commit(rev: str) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"{rev} is not in this clone's history")
    return done.stdout.decode().strip()


def ab(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.ab", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(120)
def test_ab_loads_both_revisions_in_turn_and_writes_a_paired_report(tmp_path: Path) -> None:
    head = commit("HEAD")
    # one revision against itself with a setting changed: what the per-call log line costs
    done = ab("--quick", "--base", "HEAD", "--head", "HEAD", "--head-env", "MUSTER_CALL_LOG=false", "--out",
              str(tmp_path), "--name", "check")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "runs from" in done.stderr and "its settings read what they were given" in done.stderr
    results = json.loads((tmp_path / "check.json").read_text())
    assert results["base"]["commit"] == results["head"]["commit"] == head
    assert results["base"]["env"] == {} and results["head"]["env"] == {"MUSTER_CALL_LOG": "false"}
    assert results["settings"]["rounds"] == 1
    assert len(results["machine"]["loadavg_before"].split()) == 3
    for workload in ("sequential", "concurrent"):
        entry = results["workloads"][workload]
        assert entry["failed"] == {"base": 0, "head": 0}
        for label in ("base", "head"):
            rounds = entry[label]["rounds"]
            assert all(len(values) == 1 for values in rounds.values())
            assert rounds["total"][0] == pytest.approx(rounds["ingress"][0] + rounds["worker"][0] + rounds["valkey"][0])
            assert rounds["rate"][0] > 0 and rounds["p50"][0] > 0
        difference = entry["difference"]["total"]
        expected = entry["head"]["rounds"]["total"][0] - entry["base"]["rounds"]["total"][0]
        assert difference["rounds"] == [pytest.approx(expected, abs=0.001)]
        assert difference["min"] == difference["max"] == difference["median"]
    loaded = results["workloads"]["concurrent"]  # enough calls that each role shows CPU at /proc's 10 ms tick
    assert all(loaded[label]["median"][role] > 0 for label in ("base", "head") for role in ("ingress", "worker"))
    page = (tmp_path / "check.md").read_text()
    assert page.startswith(f"# A/B: `{head[:7]}` against `{head[:7]}`")
    assert "--head-env MUSTER_CALL_LOG=false" in page and "with `MUSTER_CALL_LOG=false`" in page
    assert "## What the numbers show" in page and "Both revisions read the same environment variables." in page
    assert not (tmp_path / "README.md").exists()  # no benchmark results there, so no page to link it from


def test_each_revision_is_given_the_variable_names_its_own_settings_read(tmp_path: Path) -> None:
    before = revision.export("base", commit(f"{SHAPES}^1"), tmp_path)
    after = revision.export("head", commit(SHAPES), tmp_path)
    assert before.names["worker"]["worker_id"] == "MUSTER_WORKER_WORKER_ID"
    assert after.names["worker"]["worker_id"] == "MUSTER_WORKER_ID"
    assert (before.classes["worker"], after.classes["worker"]) == ("Settings", "WorkerSettings")
    values = {"valkey_url": "redis://127.0.0.1:1/0", "servers": "/srv", "worker_id": "w-1", "port": "1"}
    assert before.environment("worker", values)["MUSTER_WORKER_WORKER_ID"] == "w-1"
    assert before.environment("worker", values)["PYTHONPATH"] == str(before.tree)


def test_a_side_s_variables_are_muster_s_own_or_refused(tmp_path: Path) -> None:
    done = ab("--quick", "--base", "HEAD", "--head", "HEAD", "--head-env", "PATH=/nowhere", "--out", str(tmp_path))
    assert done.returncode != 0 and "'PATH=/nowhere': expected MUSTER_NAME=VALUE" in done.stderr


def test_revisions_that_declare_different_requirements_are_refused(tmp_path: Path) -> None:
    # authlib left the requirements after issue 13
    commit(SHAPES)
    done = ab("--quick", "--base", SHAPES, "--head", "HEAD", "--out", str(tmp_path), timeout=60)
    assert done.returncode != 0
    assert "declare different requirements" in done.stderr and "authlib" in done.stderr
    assert not (tmp_path / "ab.json").exists()
