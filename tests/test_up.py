"""`muster up`, exactly as `make up` runs it: the whole stack on embedded Valkey with the two demo clusters."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import orjson
import psutil
import pytest

from tests.conftest import ROOT, mcp_client

pytestmark = pytest.mark.slow

URL = "http://127.0.0.1:8090/mcp"


def wait_ready(process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "muster up exited early"
        try:
            if httpx.get("http://127.0.0.1:8090/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("muster up did not become ready")


async def use_the_demo() -> None:
    async with mcp_client(URL) as client:
        names: set[str] = set()
        with anyio.fail_after(10):  # discovery lists both clusters within moments of starting
            while len(names) < 12:
                names = {t.name for t in (await client.list_tools()).tools}
                await anyio.sleep(0.1)
        assert {"x_gazelle_list", "x_graveler_list", "x_gazelle_logs", "x_graveler_cluster_health"} <= names
        result = await client.call_tool("x_graveler_list", {"resourceType": "pods", "namespace": "org-acme"})
        assert not result.is_error
        text = result.content[0].text
        assert '"kind": "PodList"' in text and '"status": "CrashLoopBackOff"' in text
        denied = await client.call_tool("x_gazelle_list", {"resourceType": "secrets"})
        assert denied.is_error
        expected = 'secrets is forbidden: User "system:anonymous" cannot list resource "secrets"'
        assert expected in denied.content[0].text


def test_the_official_client_lists_both_demo_clusters_and_gets_a_real_answer(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "muster", "up", "--data", str(tmp_path / "data")], cwd=ROOT)
    children: list[psutil.Process] = []
    try:
        wait_ready(process)
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 7  # valkey, two stand-ins, discovery, two workers, ingress
        anyio.run(use_the_demo)
        shown = subprocess.run(
            [sys.executable, "-m", "muster", "status", "--json", "--data", str(tmp_path / "data")],
            capture_output=True,
            cwd=ROOT,
            timeout=30,
            check=True,
        )
        found = orjson.loads(shown.stdout)
        assert [(s["name"], s["state"]) for s in found["servers"]] == [
            ("k8s-gazelle", "Connected"),
            ("k8s-graveler", "Connected"),
        ]
        assert len(found["workers"]) == 2 and len(found["ingress"]) == 1 and found["dead_letters"] == 0
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"processes left behind: {[c.cmdline() for c in alive]}"
