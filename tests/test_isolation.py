"""A sick upstream harms only itself: one that answers 5xx, drops connections or hangs has its circuit opened,
calls to other servers keep their latency, and it is used again by itself once it is well; servers that hang
cannot take a replica's room from a healthy one."""

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from muster import status
from tests.conftest import HEADERS, Muster, StandIn, initialize, make_muster

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

NS = {"resourceType": "namespaces", "name": "default"}
WORKER = {
    "MUSTER_WORKER_BREAKER_FAILURES": "3",
    "MUSTER_WORKER_BREAKER_COOLDOWN_SECONDS": "3",
    "MUSTER_WORKER_BREAKER_PROBE_SECONDS": "3",
    "MUSTER_WORKER_RETRY_BACKOFF_SECONDS": "0.05",
    "MUSTER_WORKER_SERVER_CONCURRENCY": "16",
}
OPEN = "circuit is open"


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        for name in ("sick", "healthy", "hung1", "hung2"):
            m.standin(name)
        m.discovery()
        for _ in range(2):
            m.worker(**WORKER)
        m.ingress(MUSTER_INGRESS_CALL_TIMEOUT="10")
        m.ingress(MUSTER_INGRESS_CALL_TIMEOUT="2")  # for calls to an upstream that hangs
        m.ingress(
            MUSTER_INGRESS_CALL_TIMEOUT="20", MUSTER_INGRESS_MAX_PENDING="24", MUSTER_INGRESS_MAX_PENDING_PER_SERVER="8"
        )
        m.wait_tools(24)
        for child in m.workers:
            m.beating(child)
        yield m


@pytest.fixture
def sick(muster: Muster) -> Iterator[StandIn]:
    standin = muster.standins["sick"]
    yield standin
    standin.clear_faults()


class Agent:
    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.session = initialize(url)
        self.ids = 0

    async def call(self, server: str, arguments: dict[str, Any] = NS) -> tuple[float, dict[str, Any]]:
        """(seconds it took, the JSON-RPC response)."""
        self.ids += 1
        body = {
            "jsonrpc": "2.0",
            "id": self.ids,
            "method": "tools/call",
            "params": {"name": f"x_{server}_get", "arguments": arguments},
        }
        started = time.monotonic()
        response = await self.http.post(self.url, headers={**HEADERS, "Mcp-Session-Id": self.session}, json=body)
        took = time.monotonic() - started
        assert response.status_code == 200, response.text
        message: dict[str, Any] = response.json()
        return took, message

    async def latency(self, server: str, calls: int = 10) -> float:
        """The median time of `calls` sequential successful calls."""
        times = []
        for _ in range(calls):
            took, message = await self.call(server)
            assert message["result"]["isError"] is False, message
            times.append(took)
        return statistics.median(times)


def posts(server: StandIn) -> int:
    """The POSTs a stand-in received (calls and handshakes; its GET streams and DELETEs are not calls)."""
    return sum(n for request, n in server.stats()["requests"].items() if request.startswith("POST"))


async def _open_circuit_then_recover(muster: Muster, sick: StandIn, url: str, fault: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        agent = Agent(http, url)
        idle = await agent.latency("healthy")
        sick.fault(**fault)
        during: list[float] = []

        async def healthy_meanwhile() -> None:
            during.append(await agent.latency("healthy", 20))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(healthy_meanwhile)
                # each worker opens its own circuit: until then calls reach the sick server and fail
                answers: list[dict[str, Any]] = []
                while sum(OPEN in a.get("error", {}).get("message", "") for a in answers[-4:]) < 4:
                    answers.append((await agent.call("sick"))[1])
                    assert "error" in answers[-1], answers[-1]
                    assert answers[-1]["error"]["code"] in (-32004, -32001), answers[-1]
        failed = len(answers)
        # open: calls fail at once, with a retry hint, and do not reach the sick server
        reached = posts(sick)
        probes = 0
        for _ in range(10):
            took, answer = await agent.call("sick")
            if answer["error"]["code"] == -32001 and probes < 2:
                probes += 1  # the cooldown ended meanwhile (a loaded machine): a worker's half-open probe, which hung
                continue
            assert answer["error"]["code"] == -32004 and OPEN in answer["error"]["message"], answer
            assert took < 0.5 and 0 < answer["error"]["data"]["retryAfter"] <= 3
        # At most a half-open probe per worker when the cooldown ends meanwhile (a loaded machine): each may open a
        # session first (initialize, initialized, the call). Ten calls reaching the server would be ten POSTs more.
        assert posts(sick) - reached <= 3 * 2
        shown = next(s for s in (await status.status(muster.valkey_url)).servers if s.name == "sick")
        assert set(shown.circuits.values()) <= {"open", "half-open"} and shown.circuits  # what `muster status` shows
        sick.clear_faults()
        recovered = time.monotonic()
        with anyio.fail_after(20):  # well again: after the cooldown a probe closes the circuit by itself
            while "result" not in (await agent.call("sick"))[1]:
                await anyio.sleep(0.2)
        print(
            f"\n{fault['action']}: circuit open after {failed} calls; healthy p50 {idle * 1000:.1f} ms idle, "
            f"{during[0] * 1000:.1f} ms meanwhile; usable again {time.monotonic() - recovered:.1f} s after it healed"
        )
        assert during[0] < 3 * idle + 0.05  # the other server's calls kept their latency


async def test_an_upstream_answering_5xx_has_its_circuit_opened_and_is_used_again_once_well(
    muster: Muster, sick: StandIn
) -> None:
    await _open_circuit_then_recover(
        muster, sick, muster.url(0), {"action": "http_status", "method": "tools/call", "status": 502}
    )


async def test_an_upstream_dropping_connections_has_its_circuit_opened_and_is_used_again_once_well(
    muster: Muster, sick: StandIn
) -> None:
    await _open_circuit_then_recover(muster, sick, muster.url(0), {"action": "drop_connection", "tool": "get"})


async def test_an_upstream_that_hangs_has_its_circuit_opened_and_is_used_again_once_well(
    muster: Muster, sick: StandIn
) -> None:
    await _open_circuit_then_recover(muster, sick, muster.url(1), {"action": "delay", "tool": "get", "seconds": 4})


async def test_two_upstreams_that_hang_do_not_make_a_healthy_one_refuse(muster: Muster) -> None:
    for name in ("hung1", "hung2"):
        muster.standins[name].fault(action="delay", tool="get", seconds=30)
    refused: list[dict[str, Any]] = []
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            agent = Agent(http, muster.url(2))

            async def hang(server: str) -> None:
                with anyio.move_on_after(15):
                    answer = (await agent.call(server))[1]
                    if answer.get("error", {}).get("code") == -32003:
                        refused.append(answer)

            async with anyio.create_task_group() as tg:
                for server in ("hung1", "hung2"):
                    for _ in range(12):
                        tg.start_soon(hang, server)
                with anyio.fail_after(10):
                    while len(refused) < 8:  # beyond 8 each, the replica refuses calls to these two
                        await anyio.sleep(0.05)
                for _ in range(10):  # 16 of the replica's 24 are taken, none by this server
                    answer = (await agent.call("healthy"))[1]
                    assert answer["result"]["isError"] is False, answer
                tg.cancel_scope.cancel()
    finally:
        for name in ("hung1", "hung2"):
            muster.standins[name].clear_faults()
    assert all("too many calls in flight to hung" in a["error"]["message"] for a in refused)
