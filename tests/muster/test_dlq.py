"""`muster dlq` against real dead letters: calls held by a worker that was SIGKILLed, set aside by the worker that
reclaimed them (MUSTER_WORKER_MAX_DELIVERIES=1), then listed, shown, replayed and dropped with the command."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from tests.conftest import HEADERS, ROOT, Muster, both_running, initialize, make_muster

pytestmark = pytest.mark.slow

SET_ASIDE_AT_ONCE = {
    "MUSTER_WORKER_MAX_DELIVERIES": "1",
    "MUSTER_WORKER_DEAD_AFTER_SECONDS": "1",
    "MUSTER_WORKER_RECLAIM_SECONDS": "0.3",
    "MUSTER_WORKER_HEARTBEAT_SECONDS": "0.3",
}


def dlq(muster: Muster, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    return subprocess.run(
        [sys.executable, "-m", "muster", "dlq", *args],
        env={**clean, "MUSTER_VALKEY_URL": muster.valkey_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.standin("alpha", "--destructive")
        m.discovery()
        m.ingress()
        m.wait_tools(8)
        yield m


def set_aside(muster: Muster) -> dict[str, Any]:
    """A read-only and a destructive call, both running when their worker is SIGKILLed; the next worker sets
    them aside. Returns what their callers were answered."""
    alpha = muster.standins["alpha"]
    alpha.fault(action="delay", seconds=3, count=2)
    worker = muster.worker(**SET_ASIDE_AT_ONCE)
    headers = {**HEADERS, "Mcp-Session-Id": initialize(muster.url())}

    async def scenario() -> dict[str, httpx.Response]:
        async with both_running(alpha, muster.url(), headers) as answers:
            muster.stack.stop_child(worker, signal.SIGKILL)
            muster.worker(**SET_ASIDE_AT_ONCE)
        return answers

    return {name: response.json() for name, response in anyio.run(scenario).items()}


def test_dead_letters_are_listed_shown_replayed_and_dropped(muster: Muster) -> None:
    answers = set_aside(muster)
    for answer in answers.values():
        assert answer["error"]["code"] == -32005 and "set aside" in answer["error"]["message"]
    listed = dlq(muster, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = {d["target"]: d for d in orjson.loads(listed.stdout)}
    assert set(letters) == {"get", "delete"}
    get, delete = letters["get"], letters["delete"]
    assert (get["server"], get["method"], get["deliveries"], get["safe"]) == ("alpha", "tools/call", 1, True)
    assert delete["safe"] is False

    table = dlq(muster, "list")
    assert table.stdout.splitlines()[0].split() == ["ID", "SET", "ASIDE", "SERVER", "CALL", "DELIVERIES", "SAFE"]
    assert any(line.startswith(get["id"]) and "tools/call get" in line for line in table.stdout.splitlines())

    shown = dlq(muster, "show", get["id"])
    assert (
        shown.returncode == 0 and '"resourceType": "namespaces"' in shown.stdout and "safe:       yes" in shown.stdout
    )

    alpha = muster.standins["alpha"]
    before = alpha.stats()["started"].get("get", 0)
    replayed = dlq(muster, "replay", get["id"], "--wait", "30")
    assert replayed.returncode == 0, replayed.stderr
    outcome = orjson.loads(replayed.stdout)
    assert outcome["result"]["isError"] is False and '"name": "default"' in outcome["result"]["content"][0]["text"]
    assert alpha.stats()["started"]["get"] == before + 1

    refused = dlq(muster, "replay", delete["id"])
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("is not safe to run twice and may have run already; replay it with --force")
    dropped = dlq(muster, "drop", delete["id"])
    assert dropped.returncode == 0 and dropped.stdout == f"dropped {delete['id']}\n"
    assert dlq(muster, "list").stdout == "no dead letters\n"
    missing = dlq(muster, "show", delete["id"])
    assert missing.returncode == 2 and "no dead letter" in missing.stderr


def test_without_a_valkey_to_look_in_dlq_says_where_it_looked(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    done = subprocess.run(
        [sys.executable, "-m", "muster", "dlq", "list", "--data", str(tmp_path)],
        env={**clean, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"muster dlq: no Valkey: give --valkey URL (or MUSTER_VALKEY_URL), or run muster up with --data {tmp_path}\n"
    )
