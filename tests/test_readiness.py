"""/readyz of every service follows Valkey: false within 5 s of it dying, true again once it is back (with its
data), and /healthz stays true throughout: restarting a process would not bring Valkey back."""

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from muster.stack import free_port
from tests.conftest import Muster, make_muster

pytestmark = pytest.mark.slow


@pytest.fixture
def muster(tmp_path: Path) -> Iterator[tuple[Muster, dict[str, int]]]:
    for m in make_muster(tmp_path):
        m.standin("alpha")
        ports = {"discovery": free_port(), "worker": free_port()}
        m.stack.python(
            "discovery",
            "services.discovery",
            env={**m.env, "MUSTER_SERVERS": str(m.servers), "MUSTER_DISCOVERY_METRICS_PORT": str(ports["discovery"])},
        )
        m.worker(MUSTER_WORKER_METRICS_PORT=str(ports["worker"]))
        m.ingress()
        ports["ingress"] = m.ingress_ports[0]
        m.wait_tools(6)
        yield m, ports


def status(port: int, path: str = "/readyz") -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def first(port: int, wanted: int, seconds: float) -> float:
    """Seconds until /readyz answers `wanted`; inf when it does not within `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if status(port) == wanted:
            return time.monotonic() - started
        time.sleep(0.1)
    return float("inf")


def test_readyz_of_each_service_turns_false_when_valkey_stops_and_true_when_it_returns(
    muster: tuple[Muster, dict[str, int]],
) -> None:
    m, ports = muster
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(status(p) != 200 for p in ports.values()):
        time.sleep(0.1)
    assert {name: status(port) for name, port in ports.items()} == dict.fromkeys(ports, 200)
    time.sleep(1.5)  # Valkey's append-only file is written every second: the groups and records are on disk
    valkey = next(c for c in m.stack.children if c.name == "valkey")
    valkey_port = int(m.valkey_url.rsplit(":", 1)[1].split("/")[0])
    m.stack.stop_child(valkey, signal.SIGKILL)
    with ThreadPoolExecutor(len(ports)) as pool:
        down = dict(zip(ports, pool.map(lambda p: first(p, 503, 10), ports.values()), strict=True))
    assert all(seconds < 5 for seconds in down.values()), down
    assert {name: status(port, "/healthz") for name, port in ports.items()} == dict.fromkeys(ports, 200)

    m.stack.valkey(valkey_port)
    m.stack.children.insert(0, m.stack.children.pop())  # stopped last again, after the services
    with ThreadPoolExecutor(len(ports)) as pool:
        up = dict(zip(ports, pool.map(lambda p: first(p, 200, 30), ports.values()), strict=True))
    assert all(seconds < 30 for seconds in up.values()), up
    print(f"not ready after {down}, ready again after {up}")
