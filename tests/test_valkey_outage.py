"""Valkey outages at the level of the services: while Valkey is away every call is answered at once with -32006
and a retry hint and readiness says why; no service exits, and each resumes by itself when Valkey is back, with
its data or without it (the consumer groups that a reader needs are made again)."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from muster.stack import free_port
from tests.conftest import HEADERS, Muster, initialize, make_muster

pytestmark = pytest.mark.slow

NS = {"resourceType": "namespaces", "name": "default"}


@pytest.fixture
def muster(tmp_path: Path) -> Iterator[Muster]:
    for m in make_muster(tmp_path):
        m.standin("alpha")
        m.discovery()
        m.worker()
        m.ingress()
        m.wait_tools(6)
        yield m


def call(url: str, session: str, timeout: float = 15) -> tuple[int, dict[str, Any]]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x_alpha_get", "arguments": NS}}
    response = httpx.post(url, headers={**HEADERS, "Mcp-Session-Id": session}, json=body, timeout=timeout)
    return response.status_code, response.json()


def works_again(muster: Muster, within: float) -> float:
    """Seconds until a call in a new session succeeds."""
    started = time.monotonic()
    while True:
        try:
            status, message = call(muster.url(), initialize(muster.url()), timeout=5)
            if status == 200 and "result" in message:
                return time.monotonic() - started
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        assert time.monotonic() - started < within, f"calls did not work again; valkey: {what_valkey_holds(muster)}"
        time.sleep(0.2)


def what_valkey_holds(muster: Muster) -> dict[str, Any]:
    """Where the calls that got no answer are (for the failure message): the queue, its pending entries, the
    replies waiting, the heartbeats."""

    async def look() -> dict[str, Any]:
        from shared import streams
        from shared.valkey import connect

        client = connect(muster.valkey_url)
        try:
            queue = streams.calls("alpha")
            found: dict[str, Any] = {"queue": await client.xlen(queue)}
            found["groups"] = await client.xinfo_groups(queue)
            for pattern in ("muster:replies:*", "muster:*beat*", "*depth*", "*shares*"):
                for key in await client.keys(pattern):
                    kind = await client.type(key)
                    if kind == b"stream":
                        found[str(key)] = await client.xlen(key)
                    elif kind == b"hash":
                        found[str(key)] = await client.hgetall(key)
                    else:
                        found[str(key)] = await client.get(key)
            return found
        finally:
            await client.aclose()

    try:
        return anyio.run(look)
    except Exception as exc:  # noqa: BLE001 - only a failure message: what is there to see, or why not
        return {"unreadable": repr(exc)}


def valkey_port(muster: Muster) -> int:
    return int(muster.valkey_url.rsplit(":", 1)[1].split("/")[0])


def test_valkey_losing_its_data_under_a_running_stack_stops_no_service(muster: Muster) -> None:
    assert works_again(muster, 20) >= 0
    pids = {c.name: c.pid for c in muster.stack.children}

    async def flush() -> None:
        from shared.valkey import connect

        client = connect(muster.valkey_url)
        try:
            await client.flushall()  # the stream, its consumer group, the catalog, the sessions: all gone
        finally:
            await client.aclose()

    anyio.run(flush)
    # the worker's reader finds its consumer group gone: it makes it again and reads on (FastStream alone would
    # have ended the whole worker)
    works_again(muster, 30)
    muster.stack.check()
    assert {c.name: c.pid for c in muster.stack.children} == pids


def test_while_valkey_is_away_calls_are_answered_at_once_and_all_resumes_when_it_is_back(muster: Muster) -> None:
    session = initialize(muster.url())
    assert "result" in call(muster.url(), session)[1]
    pids = {c.name: c.pid for c in muster.stack.children if c.name != "valkey"}
    valkey = next(c for c in muster.stack.children if c.name == "valkey")
    port = valkey_port(muster)
    muster.stack.stop_child(valkey, signal.SIGKILL)

    for _ in range(3):
        started = time.monotonic()
        status, message = call(muster.url(), session)
        assert time.monotonic() - started < 2, "answered at once, not at the call's deadline"
        assert status == 503 and message["error"]["code"] == -32006 and message["error"]["data"] == {"retryAfter": 1}
    ready = httpx.get(muster.url().replace("/mcp", "/readyz"), timeout=5)
    assert ready.status_code == 503 and "Connection" in ready.json()["checks"]["valkey"]

    time.sleep(2)  # a while longer away: nothing gives up meanwhile
    muster.stack.valkey(port)  # back, with its append-only file
    muster.stack.children.insert(0, muster.stack.children.pop())  # stopped last again
    works_again(muster, 30)
    ready = httpx.get(muster.url().replace("/mcp", "/readyz"), timeout=5)
    assert ready.status_code == 200, ready.text
    assert {c.name: c.pid for c in muster.stack.children if c.name != "valkey"} == pids


def test_services_started_while_valkey_is_away_wait_for_it_and_say_so(muster: Muster) -> None:
    valkey = next(c for c in muster.stack.children if c.name == "valkey")
    port = valkey_port(muster)
    muster.stack.stop_child(valkey, signal.SIGKILL)
    worker = muster.worker()
    ingress_port = free_port()
    ingress = muster.stack.python(
        "late ingress", "services.ingress", env={**muster.env, "MUSTER_PORT": str(ingress_port)}
    )
    url = f"http://127.0.0.1:{ingress_port}/mcp"
    muster.stack.wait_tcp(ingress_port, "late ingress")
    ready = httpx.get(url.replace("/mcp", "/readyz"), timeout=5)
    assert ready.status_code == 503 and "not loaded yet" in ready.json()["checks"]["catalog"]
    refused = httpx.post(url, headers=HEADERS, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=5)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == -32006
    time.sleep(3)
    muster.stack.check()  # the new worker and ingress wait; neither exits
    muster.stack.valkey(port)
    muster.stack.children.insert(0, muster.stack.children.pop())
    muster.ingress_ports.insert(0, ingress_port)
    muster.stack.wait_http(url.replace("/mcp", "/readyz"), "late ingress")
    works_again(muster, 30)
    assert ingress.process is not None and ingress.process.poll() is None
    assert worker.process is not None and worker.process.poll() is None
