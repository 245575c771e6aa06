"""Slow and idle clients cannot hold the ingress's sockets or stall its loop: every connection is under a clock
(services/ingress/guard.py). Raw sockets against a real ingress process with short timeouts."""

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Muster, make_muster

pytestmark = pytest.mark.slow

LIMITS = {
    "MUSTER_INGRESS_IDLE_TIMEOUT": "1",
    "MUSTER_INGRESS_HEADER_TIMEOUT": "1.5",
    "MUSTER_INGRESS_BODY_TIMEOUT": "1.5",
    "MUSTER_INGRESS_MAX_CONNECTIONS": "40",
}


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.ingress(**LIMITS)
        m.ingress()  # the second with the default limits
        yield m


def connect(muster: Muster, replica: int = 0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", muster.ingress_ports[replica]), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def healthy(muster: Muster) -> float:
    started = time.monotonic()
    assert httpx.get(muster.url().replace("/mcp", "/healthz"), timeout=5).status_code == 200
    return time.monotonic() - started


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(muster: Muster) -> None:
    with connect(muster) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""
        assert 0.8 < time.monotonic() - started < 3


def test_a_keep_alive_connection_is_idle_again_after_its_response(muster: Muster) -> None:
    with connect(muster) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        started = time.monotonic()
        received = read_all(sock)
        assert received.startswith(b"HTTP/1.1 200") and b'{"status":"ok"}' in received
        assert time.monotonic() - started < 3


def test_by_default_an_idle_connection_outlives_a_clients_pool_expiry(muster: Muster) -> None:
    """A client reuses a pooled connection until it has been idle for its expiry (httpx: 5 s): a server that closes
    it first races the next request, which then ends without a response. At 5 s the two ran out together."""
    with connect(muster, replica=1) as sock:
        for idle in (6, 0):  # longer than httpx keeps it (and Node's undici, 4 s)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(idle)


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, whole, however its bytes arrive; b"" if the connection was closed."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk
    head, _ = received.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(received) < len(head) + 4 + length:
        received += sock.recv(65536)
    return received


def test_a_head_sent_a_byte_at_a_time_is_cut_off_with_408(muster: Muster) -> None:
    with connect(muster) as sock:
        started = time.monotonic()
        try:
            for byte in b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = read_all(sock)
        assert received.startswith(b"HTTP/1.1 408"), received
        assert time.monotonic() - started < 4


def test_a_body_that_never_ends_is_cut_off_with_408(muster: Muster) -> None:
    with connect(muster) as sock:
        sock.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"jsonrpc"'
        )
        started = time.monotonic()
        received = read_all(sock)
        assert received.startswith(b"HTTP/1.1 408"), received
        assert 1.0 < time.monotonic() - started < 4


def test_a_64_mb_header_is_refused_at_the_head_bound_without_stalling_the_loop(muster: Muster) -> None:
    refused: list[bytes] = []

    def send_big() -> None:
        with connect(muster) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                piece = b"a" * (1 << 20)
                for _ in range(64):
                    sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass
            refused.append(read_all(sock))

    sender = threading.Thread(target=send_big)
    sender.start()
    slowest = max(healthy(muster) for _ in range(20))
    sender.join(30)
    assert not sender.is_alive()
    assert slowest < 0.5
    # the server stopped reading at 64 KiB and closed: the client saw 431, or a reset while it still sent
    assert refused[0] == b"" or refused[0].startswith(b"HTTP/1.1 431")
    with connect(muster) as sock:  # within the bound, a big head is read and refused with 431 cleanly
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431")


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.02)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_beyond_max_connections_the_longest_idle_connection_makes_room(muster: Muster) -> None:
    sockets = [connect(muster) for _ in range(45)]  # the bound is 40, and the idle timeout 1 s
    try:
        time.sleep(0.2)
        assert all(_closed(sock) for sock in sockets[:5])  # the oldest made room for the newest
        assert not any(_closed(sock) for sock in sockets[10:40])  # the others are still open
        assert healthy(muster) < 1  # and a new client is served, at the expense of the next idle one
        assert _closed(sockets[5])
    finally:
        for sock in sockets:
            sock.close()
