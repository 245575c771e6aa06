"""What an operator sees of real traffic: every service's /metrics, the log line of each call, `muster status`.

One stack, one round of traffic with every kind of outcome (successes, isError results, an upstream 5xx, a
deadline, a backpressure rejection, a cancelled call); then each test reads what one part of muster says about
it. The worker runs one call at a time and the queue holds three, so that a queue can be filled on purpose.
"""

import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from muster import status
from muster.stack import free_port
from shared import streams
from tests.conftest import HEADERS, ROOT, Muster, StandIn, initialize, make_muster, result, tool_names

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# A token that must never reach a log line, sent as the Authorization header and returned in an upstream's error.
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZUBleGFtcGxlLmNvbSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
CALL_TIMEOUT = 8  # seconds: longer than a call waits behind the held one, shorter than the slow tool
HOLD = 5  # seconds the first call of the backpressure round runs, while two wait behind it
ARGS = {
    "get": {"resourceType": "namespaces", "name": "default"},
    "list": {"resourceType": "secrets"},  # the stand-in's RBAC denies it: an isError result
    "describe": {"resourceType": "namespaces", "name": "default"},
    "api_resources": {},
    "cluster_health": {},
}
# What the round of traffic does, by (upstream tool, outcome).
EXPECTED = Counter(
    {
        ("get", "ok"): 3,
        ("list", "tool_error"): 2,
        ("api_resources", "unreachable"): 1,  # the upstream answered HTTP 500
        ("cluster_health", "deadline"): 1,
        ("get", "cancelled"): 1,
        ("describe", "ok"): 3,
        ("describe", "rejected"): 1,  # the fourth call while three fill the queue
    }
)
ERROR_TYPE = {"ok": "", "tool_error": "tool_error", "unreachable": "-32004", "deadline": "-32001"}
ERROR_TYPE |= {"cancelled": "-32800", "rejected": "-32003"}
# The worker's error_type of the same calls, as the upstream answered them (the rejected one never got there).
UPSTREAM_ERROR_TYPE = {"ok": "", "tool_error": "tool_error", "unreachable": "http_500", "deadline": "timeout"}
UPSTREAM_ERROR_TYPE |= {"cancelled": "-32800"}


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@dataclass
class Ops:
    muster: Muster
    alpha: StandIn
    ports: dict[str, int]  # service -> the port of its /metrics
    logs: dict[str, Path]  # service -> its standard error
    before: dict[str, Samples] = field(default_factory=dict)
    after: dict[str, Samples] = field(default_factory=dict)
    held: dict[str, Samples] = field(default_factory=dict)  # while three calls fill the queue
    held_status: status.Status | None = None
    session: str = ""

    @property
    def url(self) -> str:
        return self.muster.url()

    def scrape_all(self) -> dict[str, Samples]:
        return {service: scrape(port) for service, port in self.ports.items()}

    def call(self, tool: str, request_id: int = 1) -> dict[str, Any]:
        headers = {**HEADERS, "Mcp-Session-Id": self.session, "Authorization": f"Bearer {JWT}"}
        body = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": f"x_alpha_{tool}", "arguments": ARGS[tool]},
        }
        outcome: dict[str, Any] = result(httpx.post(self.url, headers=headers, json=body, timeout=30))
        return outcome

    def cancel(self, request_id: int) -> None:
        headers = {**HEADERS, "Mcp-Session-Id": self.session}
        body = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
        assert httpx.post(self.url, headers=headers, json=body).status_code == 202

    def call_lines(self) -> list[dict[str, Any]]:
        lines = [orjson.loads(line) for line in self.logs["ingress"].read_bytes().splitlines() if line.startswith(b"{")]
        return [line for line in lines if line["msg"] == "call"]


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def ops(muster_root: Path) -> Iterator[Ops]:
    for m in make_muster(muster_root):
        m.env["MUSTER_LOG_JSON"] = "true"
        alpha = m.standin("alpha")
        m.fixture_server("fixture")  # an upstream that notifies during its calls
        ports = {"discovery": free_port(), "worker": free_port()}
        logs = {name: m.root / f"{name}.log" for name in ("ingress", "worker", "discovery")}
        m.stack.python(
            "discovery",
            "services.discovery",
            env={**m.env, "MUSTER_SERVERS": str(m.servers), "MUSTER_DISCOVERY_METRICS_PORT": str(ports["discovery"])},
            stderr=logs["discovery"],
        )
        m.stack.python(
            "worker",
            "services.worker",
            env={
                **m.env,
                "MUSTER_WORKER_ID": "ops-worker",
                "MUSTER_WORKER_METRICS_PORT": str(ports["worker"]),
                "MUSTER_WORKER_SERVER_CONCURRENCY": "1",
                "MUSTER_WORKER_RETRY_ATTEMPTS": "1",  # each fault below is one outcome: no call is sent again
            },
            stderr=logs["worker"],
        )
        port = ports["ingress"] = free_port()
        m.stack.python(
            "ingress",
            "services.ingress",
            env={
                **m.env,
                "MUSTER_PORT": str(port),
                "MUSTER_INGRESS_QUEUE_LIMIT": "3",
                "MUSTER_INGRESS_CALL_TIMEOUT": str(CALL_TIMEOUT),
                "MUSTER_INGRESS_HEARTBEAT_SECONDS": "0.2",
            },
            stderr=logs["ingress"],
        )
        m.stack.wait_http(f"http://127.0.0.1:{port}/readyz", "ingress")
        m.ingress_ports.append(port)
        m.wait_tools({"x_alpha_get", "x_fixture_test_tool_with_logging"})
        worker_ready = f"http://127.0.0.1:{ports['worker']}/readyz"
        until(lambda: httpx.get(worker_ready).status_code == 200, 10, "worker ready")  # noqa: B023 (used at once)
        yield Ops(m, alpha, ports, logs)


@pytest.fixture(scope="module")
def traffic(ops: Ops) -> Ops:
    """One round of every kind of outcome, with the services' metrics scraped before, while the queue is full,
    and after."""
    ops.before = ops.scrape_all()
    ops.session = initialize(ops.url)
    alpha, valkey = ops.alpha, redis.Redis.from_url(ops.muster.valkey_url)
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert "result" in ops.call("get")
        for _ in range(2):
            assert ops.call("list")["result"]["isError"] is True
        alpha.fault(action="http_status", tool="api_resources", status=500, count=1, body=f"no: Bearer {JWT}")
        assert ops.call("api_resources")["error"]["code"] == -32004
        alpha.fault(action="delay", tool="cluster_health", seconds=3 * CALL_TIMEOUT, count=1)
        assert ops.call("cluster_health")["error"]["code"] == -32001

        alpha.fault(action="delay", tool="get", seconds=30, count=1)
        started = alpha.stats()["started"].get("get", 0)
        cancelled = pool.submit(ops.call, "get", 7)
        until(lambda: alpha.stats()["started"].get("get", 0) > started, 10, "the call to cancel runs upstream")
        ops.cancel(7)
        assert cancelled.result(timeout=10)["error"]["code"] == -32800

        alpha.fault(action="delay", tool="describe", seconds=HOLD, count=1)
        held = [pool.submit(ops.call, "describe", 10 + n) for n in range(3)]
        until(lambda: valkey.get(streams.depth("alpha")) == b"3", 5, "three calls fill the queue")
        assert ops.call("describe", 13)["error"]["code"] == -32003
        ops.held = {name: scrape(ops.ports[name]) for name in ("worker", "discovery")}
        # the replica's heartbeat tells its calls in flight every 0.2 s: read once it has told the three held ones
        until(
            lambda: asyncio.run(status.status(ops.muster.valkey_url)).in_flight == 3,
            5,
            "the replica's heartbeat counts the held calls",
        )
        ops.held_status = asyncio.run(status.status(ops.muster.valkey_url))
        assert all("result" in f.result(timeout=3 * HOLD) for f in held)
    valkey.close()
    expected = EXPECTED.total()
    until(
        lambda: (
            value(scrape(ops.ports["ingress"]), "muster_calls_total")
            - value(ops.before["ingress"], "muster_calls_total")
            >= expected
        ),
        5,
        "every outcome counted",
    )
    ops.after = ops.scrape_all()
    return ops


def test_the_ingress_counts_each_call_once_by_server_tool_and_outcome(traffic: Ops) -> None:
    before, after = traffic.before["ingress"], traffic.after["ingress"]
    for (tool, outcome), count in EXPECTED.items():
        labels = {"server": "alpha", "tool": tool, "method": "tools/call", "outcome": outcome}
        assert moved(before, after, "muster_calls_total", **labels) == count, (tool, outcome)
    assert moved(before, after, "muster_calls_total") == EXPECTED.total()
    by_outcome: Counter[str] = Counter()
    for (_, outcome), count in EXPECTED.items():
        by_outcome[outcome] += count
    for outcome, count in by_outcome.items():
        labels = {"server": "alpha", "method": "tools/call", "outcome": outcome}
        assert moved(before, after, "muster_call_duration_seconds_count", **labels) == count, outcome
    assert moved(before, after, "muster_rejections_total", server="alpha", reason="queue_full") == 1
    assert moved(before, after, "muster_rejections_total", reason="replica_full") == 0


def test_the_ingress_measures_every_request_in_the_opentelemetry_histogram(traffic: Ops) -> None:
    before, after = traffic.before["ingress"], traffic.after["ingress"]
    name = "mcp_server_operation_duration_seconds_count"
    for (tool, outcome), count in EXPECTED.items():
        labels = {"gen_ai_tool_name": f"x_alpha_{tool}", "error_type": ERROR_TYPE[outcome]}
        assert moved(before, after, name, mcp_method_name="tools/call", **labels) == count, (tool, outcome)
    assert moved(before, after, name, mcp_method_name="initialize", mcp_protocol_version="2025-11-25") == 1
    assert moved(before, after, name) == EXPECTED.total() + 1
    assert value(after, "muster_catalog_entries", kind="tools") == len(tool_names(traffic.url))
    assert value(after, "muster_build_info", service="ingress") == 1


def test_the_worker_counts_queue_wait_and_upstream_time_of_each_call_it_ran(traffic: Ops) -> None:
    before, after = traffic.before["worker"], traffic.after["worker"]
    ran = EXPECTED.total() - EXPECTED[("describe", "rejected")]
    assert moved(before, after, "muster_queue_wait_seconds_count", server="alpha") == ran
    name = "mcp_client_operation_duration_seconds_count"
    for (tool, outcome), count in EXPECTED.items():
        if outcome != "rejected":
            labels = {"gen_ai_tool_name": tool, "error_type": UPSTREAM_ERROR_TYPE[outcome]}
            assert moved(before, after, name, server="alpha", **labels) == count, (tool, outcome)
    assert moved(before, after, name) == ran
    assert moved(before, after, "muster_upstream_connect_errors_total") == 1
    assert moved(before, after, "muster_upstream_connect_errors_total", server="alpha", **{"class": "http_500"}) == 1
    assert moved(before, after, "muster_upstream_initializations_total", server="alpha", reason="new") == 1
    assert moved(before, after, "muster_upstream_initializations_total", reason="lost") == 0
    assert (
        moved(before, after, "muster_redeliveries_total") == 0
        and moved(before, after, "muster_dead_letters_total") == 0
    )
    assert value(after, "muster_upstream_sessions", server="alpha") == 1
    # one 500 and one timeout are far from the failures in a row that open a circuit; every outcome was written
    assert value(after, "muster_upstream_circuit_state", server="alpha", state="closed") == 1
    assert value(after, "muster_upstream_circuit_state", server="alpha", state="open") == 0
    assert value(after, "muster_upstream_circuit_openings", server="alpha") == 0
    assert value(after, "muster_worker_unsettled_outcomes") == 0
    assert value(traffic.held["worker"], "muster_calls_in_flight", server="alpha") == 1
    assert value(after, "muster_calls_in_flight") == 0


def test_discovery_shows_the_queue_the_server_state_and_the_leader(traffic: Ops) -> None:
    held, after = traffic.held["discovery"], traffic.after["discovery"]
    assert value(held, "muster_queue_depth", server="alpha") == 3
    assert value(held, "muster_stream_pending", server="alpha") + value(held, "muster_stream_lag", server="alpha") == 3
    assert value(after, "muster_queue_depth", server="alpha") == 0
    assert value(after, "muster_stream_pending", server="alpha") == 0
    assert value(after, "muster_stream_consumers", server="alpha") == 1
    assert value(after, "muster_valkey_up") == 1 and value(after, "muster_dead_letter_length") == 0
    assert value(after, "muster_server_state", server="alpha", state="Connected") == 1
    assert value(after, "muster_server_state", server="fixture", state="Connected") == 1
    assert value(after, "muster_server_state") == 2  # one series per server
    assert value(after, "muster_discovery_leader") == 1
    assert value(after, "muster_catalog_entries", kind="tools") == len(tool_names(traffic.url))
    assert moved(traffic.before["discovery"], after, "muster_list_duration_seconds_count", outcome="error") == 0
    assert value(after, "muster_list_duration_seconds_count", server="alpha", outcome="ok") >= 1


def test_each_call_has_one_log_line_with_its_request_id_and_durations_and_no_token(traffic: Ops) -> None:
    lines = [line for line in traffic.call_lines() if line["server"] == "alpha"]
    assert Counter((line["tool"], line["outcome"]) for line in lines) == EXPECTED
    assert len({line["request_id"] for line in lines}) == len(lines)
    for line in lines:
        assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"]) and re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
        assert line["session"] == traffic.session[:8] and re.fullmatch(r"[0-9a-f]{16}", line["principal"])
        assert (line["server"], line["method"], line["service"]) == ("alpha", "tools/call", "ingress")
        assert line["total_ms"] > 0
        ran = line["outcome"] != "rejected"
        assert ("queue_ms" in line) == ran and ("upstream_ms" in line) == ran, line
    assert len({line["principal"] for line in lines}) == 1  # one caller, hashed alike every time
    for service, log in traffic.logs.items():
        text = log.read_text()
        assert JWT not in text and JWT.split(".")[1] not in text, service
        assert traffic.session not in text, service  # a session id is a bearer of the session: never whole


def test_the_request_id_of_a_call_reaches_the_upstream_as_its_traceparent(traffic: Ops) -> None:
    sent = traffic.alpha.stats()["traceparents"]
    lines = [line for line in traffic.call_lines() if line["outcome"] != "rejected" and line["server"] == "alpha"]
    assert sent and all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", t) for t in sent)
    # each call that reached the upstream carried its own request id there, the one its log line names
    assert {t.split("-")[1] for t in sent[-len(lines) :]} == {line["request_id"] for line in lines}
    assert {(t.split("-")[1], t.split("-")[2]) for t in sent[-len(lines) :]} == {
        (line["request_id"], line["span_id"]) for line in lines
    }


def test_muster_status_shows_depth_lag_and_in_flight_calls_while_a_queue_is_full(traffic: Ops) -> None:
    held = traffic.held_status
    assert held is not None
    alpha = held.servers[0]
    assert (alpha.name, alpha.state, alpha.depth) == ("alpha", "Connected", 3)
    assert alpha.running + (alpha.lag or 0) == 3 and alpha.running >= 1
    assert held.in_flight == 3


def test_muster_status_json_lists_the_servers_as_connected_with_workers_and_replicas(traffic: Ops) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "muster", "status", "--json", "--valkey-url", traffic.muster.valkey_url],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
        check=True,
    )
    found = orjson.loads(run.stdout)
    assert found["valkey"] == traffic.muster.valkey_url
    assert [(s["name"], s["state"]) for s in found["servers"]] == [("alpha", "Connected"), ("fixture", "Connected")]
    alpha = found["servers"][0]
    assert alpha["tools"] == 6
    assert (alpha["depth"], alpha["lag"], alpha["running"], alpha["consumers"]) == (0, 0, 0, 1)
    assert found["workers"] == ["ops-worker"]
    assert [r["pending"] for r in found["ingress"]] == [0] and found["in_flight"] == 0
    assert found["dead_letters"] == 0 and found["leader"]
    text = subprocess.run(
        [sys.executable, "-m", "muster", "status", "--valkey-url", traffic.muster.valkey_url],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
        check=True,
        text=True,
    ).stdout
    assert re.search(r"^alpha\s+Connected\s+6\s+0\s+0\s+0\s+1\s+closed\s*$", text, re.MULTILINE), text
    assert re.search(r"workers alive\s+1", text) and re.search(r"ingress replicas\s+1", text)


def test_notifications_relayed_to_an_agent_during_a_call_are_counted_by_method(traffic: Ops) -> None:
    before = scrape(traffic.ports["ingress"])
    headers = {**HEADERS, "Mcp-Session-Id": traffic.session}
    body = {"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "x_fixture_test_tool_with_logging"}}
    response = httpx.post(traffic.url, headers=headers, json=body, timeout=30)
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert len(events) == 4 and "result" in result(response)  # three log messages, then the result
    until(
        lambda: moved(before, scrape(traffic.ports["ingress"]), "muster_calls_total", server="fixture") == 1,
        5,
        "the call counted",
    )
    after = scrape(traffic.ports["ingress"])
    assert moved(before, after, "muster_notifications_sent_total", method="notifications/message") == 3
    assert moved(before, after, "muster_notifications_sent_total") == 3
