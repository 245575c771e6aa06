"""No peer can make muster hold more than its bounds: what clients write into Valkey has a size, a count and an
expiry; an answered call's payload leaves Valkey; an oversize upstream result gets a clear error while the
worker's memory stays bounded; a client that does not read its response is let go; a full Valkey is an error
with a retry hint, never a bare 500."""

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from shared import streams
from tests.conftest import HEADERS, Muster, initialize, make_muster

pytestmark = pytest.mark.slow

SESSION_TTL = 8
MAX_SESSIONS = 15
LIMIT = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root, maxmemory="96mb"):
        m.raw_server()
        m.fixture_server()
        m.discovery(prefix_mode="always")
        m.worker(MUSTER_WORKER_MAX_RESULT_BYTES=str(LIMIT))
        m.ingress(
            MUSTER_INGRESS_SESSION_TTL=str(SESSION_TTL),
            MUSTER_INGRESS_SESSION_RECHECK="1",  # below the TTL: a session in use is renewed in time
            MUSTER_INGRESS_MAX_SESSIONS=str(MAX_SESSIONS),
            MUSTER_INGRESS_MAX_SESSION_BYTES="8192",
            MUSTER_INGRESS_WRITE_TIMEOUT="2",
        )
        m.wait_tools({"x_raw_big", "x_fixture_test_simple_text"})
        yield m


@pytest.fixture
def valkey(muster: Muster) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(muster.valkey_url)
    try:
        yield client
    finally:
        client.close()


def rpc(muster: Muster, method: str, params: Any = None, session: str | None = None, id: Any = 1) -> httpx.Response:
    headers = dict(HEADERS)
    if session is not None:
        headers["Mcp-Session-Id"] = session
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return httpx.post(muster.url(), headers=headers, json=body, timeout=30)


def open_session(muster: Muster, capabilities: Any = None, client: Any = None) -> httpx.Response:
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": capabilities or {},
        "clientInfo": client or {"name": "bounds", "version": "1"},
    }
    return rpc(muster, "initialize", params)


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


class PeakRss:
    """The largest resident size of a process while the block runs, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()


def test_responses_to_requests_a_session_was_never_asked_create_no_keys(muster: Muster, valkey: redis.Redis) -> None:
    session = initialize(muster.url())
    before = set(valkey.keys("muster:inbox:*"))
    headers = {**HEADERS, "Mcp-Session-Id": session}
    for n in range(200):
        body = {"jsonrpc": "2.0", "id": f"evil-{n}/1", "result": {"pad": "x" * 1000}}
        assert httpx.post(muster.url(), headers=headers, json=body).status_code == 202
    assert set(valkey.keys("muster:inbox:*")) == before


def test_a_session_s_capabilities_and_client_info_are_bounded_in_size(muster: Muster, valkey: redis.Redis) -> None:
    sessions = valkey.zcard(streams.SESSIONS)
    response = open_session(muster, capabilities={"experimental": {"pad": "x" * 9000}})
    assert response.json()["error"] == {
        "code": -32602,
        "message": "Invalid params: capabilities and clientInfo together exceed 8192 bytes",
    }
    assert "mcp-session-id" not in response.headers
    response = open_session(muster, client={"name": "n" * 9000})
    assert response.json()["error"]["code"] == -32602
    assert valkey.zcard(streams.SESSIONS) == sessions


def test_sessions_and_what_is_kept_for_them_expire_after_their_ttl(muster: Muster, valkey: redis.Redis) -> None:
    session = initialize(muster.url())
    uri = "test://static-text"
    assert rpc(muster, "resources/subscribe", {"uri": uri}, session).json()["result"] == {}
    key, subs = streams.session(session), streams.session_subscriptions(session)
    assert 0 < valkey.ttl(key) <= SESSION_TTL and 0 < valkey.ttl(subs) <= SESSION_TTL
    assert 0 < valkey.ttl(streams.subscribers("fixture", uri)) <= SESSION_TTL
    time.sleep(SESSION_TTL + 1)
    assert not valkey.exists(key, subs)
    assert rpc(muster, "ping", None, session).status_code == 404


def test_a_session_subscribes_to_a_bounded_number_of_resources(muster: Muster, valkey: redis.Redis) -> None:
    session = initialize(muster.url())
    for n in range(streams.SUBSCRIPTIONS_MAX):
        assert rpc(muster, "resources/subscribe", {"uri": f"test://template/{n}/data"}, session).json()["result"] == {}
    refused = rpc(muster, "resources/subscribe", {"uri": "test://template/one-too-many/data"}, session).json()
    assert refused["error"] == {
        "code": -32602,
        "message": f"Invalid params: a session subscribes to at most {streams.SUBSCRIPTIONS_MAX} resources",
    }
    assert valkey.scard(streams.session_subscriptions(session)) == streams.SUBSCRIPTIONS_MAX
    long = rpc(muster, "resources/unsubscribe", {"uri": "test://template/0/data"}, session)
    assert long.json()["result"] == {}
    too_long = rpc(muster, "resources/subscribe", {"uri": "test://template/" + "u" * 9000 + "/data"}, session).json()
    assert too_long["error"]["message"] == "Invalid params: a subscribed URI is at most 8192 bytes"


def test_sessions_are_bounded_in_count_with_a_retry_hint(muster: Muster, valkey: redis.Redis) -> None:
    opened = []
    for _ in range(MAX_SESSIONS + 5):
        response = open_session(muster)
        if "error" in response.json():
            break
        opened.append(response.headers["mcp-session-id"])
    try:
        assert 0 < valkey.zcard(streams.SESSIONS) <= MAX_SESSIONS
        error = response.json()["error"]
        assert error["code"] == -32003 and error["data"] == {"retryAfter": 1.0}
        assert response.headers["retry-after"] == "1"
        assert httpx.delete(muster.url(), headers={"Mcp-Session-Id": opened.pop()}).status_code == 200
        assert "result" in open_session(muster).json()
    finally:
        for session in opened:
            httpx.delete(muster.url(), headers={"Mcp-Session-Id": session})


def test_an_answered_call_s_payload_is_gone_from_valkey_soon_after(muster: Muster, valkey: redis.Redis) -> None:
    session = initialize(muster.url())
    arguments = {"pad": "p" * 500_000}
    for n in range(5):
        response = rpc(muster, "tools/call", {"name": "x_raw_echo", "arguments": arguments}, session, id=n)
        assert response.json()["result"]["structuredContent"] == arguments
    replies = valkey.keys("muster:replies:*")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        valkey.xlen(streams.calls("raw")) or any(valkey.xlen(stream) for stream in replies)
    ):
        time.sleep(0.05)
    assert valkey.xlen(streams.calls("raw")) == 0  # the call's arguments
    assert all(valkey.xlen(stream) == 0 for stream in replies)  # and its result


def test_an_oversize_result_is_a_clear_error_and_the_worker_s_memory_stays_bounded(muster: Muster) -> None:
    session = initialize(muster.url())
    worker = muster.workers[0].process.pid
    before = rss(worker)
    started = time.monotonic()
    with PeakRss(worker) as peak:
        response = rpc(muster, "tools/call", {"name": "x_raw_big", "arguments": {"size": 200 << 20}}, session)
    error = response.json()["error"]
    assert error["code"] == -32008 and error["data"] == {"limit": LIMIT}
    assert error["message"].startswith(f"raw answered with more than muster carries ({LIMIT} bytes")
    assert time.monotonic() - started < 10
    assert peak.peak - before < 4 * LIMIT  # a bounded number of copies of the limit, never the 200 MB
    # and a result within the limit still passes
    fine = rpc(muster, "tools/call", {"name": "x_raw_big", "arguments": {"size": 1 << 20}}, session)
    assert len(fine.json()["result"]["content"][0]["text"]) == 1 << 20


def test_a_client_that_does_not_read_its_response_is_let_go(muster: Muster) -> None:
    session = initialize(muster.url())
    ingress = psutil.Process(muster.stack.children[-1].process.pid)  # type: ignore[union-attr]
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x_raw_big","arguments":{"size":%d}}}' % (
        12 << 20
    )
    with socket.create_connection(("127.0.0.1", muster.ingress_ports[0]), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\nMcp-Session-Id: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (session.encode(), len(body), body)
        )
        time.sleep(6)  # the result is ready within a second; then the ingress waits write_timeout=2 s for us
        reading = time.monotonic()
        received = 0
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        # reset, not closed: a close would leave the kernel's send buffer (MBs) trickling out at this reader's pace
        assert time.monotonic() - reading < 5
    assert 0 < received < 12 << 20  # cut off: what was in the socket buffers, not the response
    assert ingress.is_running()
    assert "result" in rpc(muster, "ping", None, initialize(muster.url())).json()


def test_a_full_valkey_is_an_error_with_a_retry_hint_and_muster_recovers(muster: Muster, valkey: redis.Redis) -> None:
    session = initialize(muster.url())
    # as muster.stack runs it (muster up, and these tests): bounded, and refusing rather than evicting when full
    assert valkey.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    limit = str(valkey.config_get("maxmemory")["maxmemory"])
    assert int(limit) == 96 << 20
    used = int(valkey.info("memory")["used_memory"])
    valkey.config_set("maxmemory", str(used - (1 << 20)))  # full: no write of any size fits (noeviction)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            valkey.set("one-more", b"x")
        response = rpc(muster, "tools/call", {"name": "x_raw_odd", "arguments": {}}, session)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == -32006 and error["data"] == {"retryAfter": 1.0}
        assert response.headers["retry-after"] == "1"
        assert open_session(muster).json()["error"]["code"] == -32006
    finally:
        valkey.config_set("maxmemory", limit)
    assert "result" in rpc(muster, "tools/call", {"name": "x_raw_odd", "arguments": {}}, session).json()
