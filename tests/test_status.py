"""`muster status` against what `muster up` runs: it finds that Valkey by itself, and sees every part."""

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from muster.cli import VALKEY_URL_FILE
from muster.stack import Stack, free_port
from tests.conftest import ROOT, server_yaml

pytestmark = pytest.mark.slow


def status(data: Path) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "muster", "status", "--json", "--data", str(data)],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
        check=True,
    )
    found: dict[str, Any] = orjson.loads(run.stdout)
    return found


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_muster_status_shows_what_muster_up_runs(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "upstreams")
    servers, data, port = tmp_path / "servers", tmp_path / "data", free_port()
    servers.mkdir()
    for cluster in ("gazelle", "graveler"):
        upstream = free_port()
        stack.python(cluster, "demo.kubernetes", "--cluster", cluster, "--port", str(upstream))
        stack.wait_tcp(upstream, cluster)
        (servers / f"{cluster}.yaml").write_text(server_yaml(cluster, f"http://127.0.0.1:{upstream}/mcp"))
    up = subprocess.Popen(
        [sys.executable, "-m", "muster", "up", "--servers", str(servers), "--port", str(port), "--data", str(data)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        found: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert up.poll() is None, "muster up exited early"
            if (data / VALKEY_URL_FILE).exists() and ready(port):
                found = status(data)
                states = {s["name"]: s["state"] for s in found["servers"]}
                if states == {"gazelle": "Connected", "graveler": "Connected"} and len(found["workers"]) == 2:
                    break
            time.sleep(0.5)
        assert [(s["name"], s["state"], s["tools"]) for s in found["servers"]] == [
            ("gazelle", "Connected", 6),
            ("graveler", "Connected", 6),
        ]
        assert len(found["workers"]) == 2 and len(found["ingress"]) == 1 and found["leader"]
        assert all((s["depth"], s["running"], s["consumers"]) == (0, 0, 2) for s in found["servers"])
        assert found["dead_letters"] == 0 and found["in_flight"] == 0
    finally:
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=30)
        stack.stop()
    assert up.returncode == 0
    assert not (data / VALKEY_URL_FILE).exists()  # a stopped stack leaves no address behind for `muster status`
    # muster up told where each part serves its metrics, on ports it picked
    (metrics,) = [line for line in err.decode().splitlines() if "muster: metrics:" in line]
    for name in ("ingress", "discovery", "worker 1", "worker 2"):
        assert f"{name} http://127.0.0.1:" in metrics
    ports = [int(p.split("/")[0]) for p in metrics.split("http://127.0.0.1:")[1:]]
    assert len(set(ports)) == 4 and port in ports
