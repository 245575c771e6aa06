"""The health server over real HTTP on 127.0.0.1, its readiness against a real valkey-server."""

import asyncio
import signal
import socket
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from muster.stack import free_port
from shared import streams
from shared.health import Health, serve
from shared.metrics import IN_FLIGHT, Metrics
from shared.queue_metrics import QueueCollector
from shared.valkey import connect
from tests.shared.conftest import ValkeyServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(valkey_server: ValkeyServer) -> AsyncIterator[Redis]:
    client = connect(valkey_server.url)
    yield client
    await client.aclose()


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(f"http://127.0.0.1:{port}{path}")


async def test_healthz_readyz_and_metrics_answer_over_http(client: Redis) -> None:
    metrics = Metrics("worker")
    metrics.sample(IN_FLIGHT, lambda: {("gazelle",): 2.0})
    health = Health(metrics.registry)
    health.check("valkey", client.ping)
    async with serve(health, "127.0.0.1", free_port()) as port:
        assert port is not None
        live = await get(port, "/healthz")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        ready = await get(port, "/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ok", "checks": {"valkey": "ok"}})
        scraped = await get(port, "/metrics")
        assert scraped.headers["content-type"].startswith("text/plain; version=")
        families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
        assert [s.value for s in families["muster_calls_in_flight"].samples] == [2.0]
        assert (await get(port, "/nowhere")).status_code == 404


async def test_readyz_turns_false_within_its_bound_when_valkey_stops_and_true_when_it_returns(
    client: Redis, valkey_server: ValkeyServer
) -> None:
    health = Health(CollectorRegistry())
    health.check("valkey", client.ping, timeout=1.0)
    health.check("catalog", lambda: asyncio.sleep(0))
    async with serve(health, "127.0.0.1", free_port()) as port:
        assert port is not None
        assert (await get(port, "/readyz")).status_code == 200
        valkey_server.stop()
        with anyio.fail_after(5):
            answer = await get(port, "/readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "not ready" and body["checks"]["catalog"] == "ok"
        assert body["checks"]["valkey"] != "ok"
        assert (await get(port, "/healthz")).status_code == 200  # alive all the same: a restart would not help
        valkey_server.start()
        with anyio.fail_after(10):
            while (await get(port, "/readyz")).status_code != 200:
                await asyncio.sleep(0.1)


async def test_a_check_that_hangs_fails_at_its_bound_and_an_error_text_loses_its_credentials() -> None:
    async def hangs() -> None:
        await asyncio.sleep(3600)

    async def leaks() -> None:
        raise RuntimeError("refused: Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123456789")

    health = Health(CollectorRegistry())
    health.check("slow", hangs, timeout=0.2)
    health.check("leaky", leaks)
    with anyio.fail_after(2):
        ok, checks = await health.ready()
    assert not ok
    assert checks["slow"] == "no answer within 0.2 s"
    assert "abcdefghijklmnop" not in checks["leaky"] and checks["leaky"].startswith("RuntimeError: refused")


async def test_metrics_runs_the_scrape_hooks_first(client: Redis) -> None:
    registry = CollectorRegistry()
    await client.xadd(streams.calls("s"), {"n": 1})
    collector = QueueCollector(client, lambda: ["s"]).register(registry)
    health = Health(registry)
    health.before_scrape(collector.refresh)
    async with serve(health, "127.0.0.1", free_port()) as port:
        assert port is not None
        text = (await get(port, "/metrics")).text
    assert 'muster_stream_length{server="s"} 1.0' in text and "muster_valkey_up 1.0" in text


async def test_port_zero_is_off_and_a_stopped_server_frees_its_port() -> None:
    health = Health(CollectorRegistry())
    async with serve(health, "127.0.0.1", 0) as port:
        assert port is None
    port = free_port()
    async with serve(health, "127.0.0.1", port):
        with pytest.raises(OSError):  # bound before serve() returned: a second server cannot take the port
            socket.create_server(("127.0.0.1", port))
    with socket.create_server(("127.0.0.1", port)):
        pass
    with pytest.raises(httpx.ConnectError):
        await get(port, "/healthz")


async def test_the_server_leaves_the_service_s_signal_handlers_alone() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with serve(Health(CollectorRegistry()), "127.0.0.1", free_port()) as port:
        assert port is not None
        assert (await get(port, "/healthz")).status_code == 200
        assert {sig: signal.getsignal(sig) for sig in before} == before
