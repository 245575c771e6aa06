"""The pipelining Valkey connection against a real valkey-server (frozen with SIGSTOP on purpose) and against raw
socket servers on 127.0.0.1 that speak broken RESP; the pairing of replies with commands under any split of the
reply bytes is a property test."""

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muster.stack import Stack, free_port, valkey_binary
from shared.resp import CommandTimeout, Connection, ConnectionClosed, Unreachable, Waiter, _Protocol, pack
from shared.valkey import Outbox
from tests.shared.rawserver import Script, raw_server, read_all

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-pass"


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A valkey-server with a password; yields (url, pid)."""
    stack = Stack(tmp_path, log=lambda _: None)
    port = free_port()
    argv = [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--requirepass", PASSWORD, "--loglevel", "warning", "--dir", str(tmp_path)]  # fmt: skip
    child = stack.start("valkey", argv, quiet=True)
    try:
        stack.wait_tcp(port, "valkey")
        assert child.process is not None
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/2", child.process.pid
    finally:
        stack.stop()


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def command(connection: Connection, *args: Any) -> Any:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    connection.send(pack(*args), [future])
    return await future


async def test_commands_run_after_auth_select_and_setname(valkey: tuple[str, int]) -> None:
    connection = Connection(valkey[0], name="muster-test")
    try:
        with anyio.fail_after(5):
            assert await command(connection, "SET", "k", "v") == b"OK"
            assert await command(connection, "CLIENT", "GETNAME") == b"muster-test"
            info = await command(connection, "CLIENT", "INFO")
            assert b" db=2 " in info
    finally:
        connection.close()


async def test_a_wrong_password_is_unreachable_with_valkey_s_reason_and_without_the_password(
    valkey: tuple[str, int],
) -> None:
    url = valkey[0].replace(PASSWORD, "wrong-password")
    connection = Connection(url)
    with anyio.fail_after(5), pytest.raises(Unreachable) as info:
        await command(connection, "PING")
    assert "refused AUTH" in str(info.value) and "WRONGPASS" in str(info.value)
    assert "wrong-password" not in str(info.value) and PASSWORD not in str(info.value)
    assert isinstance(info.value, ConnectionError)


async def test_a_frozen_valkey_fails_every_waiting_command_within_the_timeout_and_the_next_reconnects(
    valkey: tuple[str, int],
) -> None:
    url, pid = valkey
    timeout = 0.5
    connection = Connection(url, command_timeout=timeout, connect_timeout=timeout)
    try:
        assert await command(connection, "PING") == b"PONG"
        loop = asyncio.get_running_loop()
        with stopped(pid):
            started = loop.time()
            first = [asyncio.ensure_future(command(connection, "INCR", "n")) for _ in range(5)]
            await asyncio.sleep(0.2)
            later = [asyncio.ensure_future(command(connection, "INCR", "n")) for _ in range(5)]
            with anyio.fail_after(3):
                outcomes = await asyncio.gather(*first, *later, return_exceptions=True)
            elapsed = loop.time() - started
            assert all(isinstance(o, CommandTimeout) for o in outcomes), outcomes
            assert "did not answer within 0.5s" in str(outcomes[0])
            assert timeout <= elapsed < timeout + 0.4, elapsed  # the oldest sets the clock; the rest go with it
            print(f"\ncommands against a SIGSTOPped valkey failed after {elapsed * 1000:.0f} ms (timeout {timeout} s)")
            # Frozen, a new connection cannot finish its set-up (AUTH) either: it fails within connect_timeout.
            started = loop.time()
            with anyio.fail_after(3), pytest.raises(Unreachable, match=r"connect_timeout=0\.5s"):
                await command(connection, "PING")
            assert loop.time() - started < timeout + 0.4
        with anyio.fail_after(5):
            assert await command(connection, "PING") == b"PONG"  # reconnected
    finally:
        connection.close()


async def test_the_outbox_writes_the_commands_of_one_loop_turn_in_one_piece(valkey: tuple[str, int]) -> None:
    outbox = Outbox(valkey[0])
    try:
        await outbox.send(b"PING")
        protocol = outbox.connection._protocol
        assert protocol is not None
        writes: list[int] = []
        transport = protocol.transport
        assert transport is not None
        write = transport.write

        def counted(data: bytes | bytearray | memoryview) -> None:
            writes.append(len(data))
            write(data)

        transport.write = counted  # type: ignore[method-assign]
        replies = await asyncio.gather(*(outbox.send(b"INCR", b"coalesced") for _ in range(100)))
        assert sorted(replies) == list(range(1, 101)) and len(writes) == 1
    finally:
        outbox.close()


# --- raw servers that speak broken RESP -----------------------------------------------------------------------------


@asynccontextmanager
async def resp_server(script: Script) -> AsyncIterator[str]:
    async with raw_server(script) as port:
        yield f"redis://127.0.0.1:{port}"


async def test_a_server_that_never_answers_the_setup_is_unreachable_within_the_connect_timeout() -> None:
    async with resp_server(read_all) as url:
        connection = Connection(url, name="x", connect_timeout=0.3)
        started = time.monotonic()
        with anyio.fail_after(3), pytest.raises(Unreachable, match=r"connect_timeout=0\.3s"):
            await command(connection, "PING")
        assert time.monotonic() - started < 1.0


async def test_commands_sent_while_connecting_are_bounded_and_the_excess_fails_at_once() -> None:
    async with resp_server(read_all) as url:
        connection = Connection(url, name="x", connect_timeout=0.5, backlog_commands=3, backlog_bytes=1 << 20)
        loop = asyncio.get_running_loop()
        queued = [loop.create_future() for _ in range(3)]
        for future in queued:
            connection.send(pack("PING"), [future])
        excess: asyncio.Future[Any] = loop.create_future()
        connection.send(pack("PING"), [excess])
        assert excess.done() and isinstance(excess.exception(), Unreachable)
        assert "cannot reach valkey" in str(excess.exception()) and "backlog_commands=3" in str(excess.exception())
        big: asyncio.Future[Any] = loop.create_future()
        connection2 = Connection(url, name="x", connect_timeout=0.5, backlog_bytes=100)
        connection2.send(pack("SET", "k", "v" * 200), [big])
        assert big.done() and "backlog_bytes=100" in str(big.exception())
        with anyio.fail_after(3):
            outcomes = await asyncio.gather(*queued, return_exceptions=True)
        assert all(isinstance(o, Unreachable) for o in outcomes)
        connection.close()
        connection2.close()


async def test_nothing_listening_is_unreachable() -> None:
    connection = Connection(f"redis://127.0.0.1:{free_port()}")
    with anyio.fail_after(3), pytest.raises(Unreachable, match="cannot reach valkey"):
        await command(connection, "PING")


async def test_a_malformed_reply_fails_the_waiting_commands_and_the_next_command_reconnects() -> None:
    connections = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"PING\r\n")
        writer.write(b"+PONG\r\n" if connections > 1 else b"?not resp\r\n")
        await writer.drain()
        await read_all(reader, writer)

    async with resp_server(script) as url:
        connection = Connection(url)
        with anyio.fail_after(3), pytest.raises(ConnectionClosed, match="malformed reply"):
            await command(connection, "PING")
        with anyio.fail_after(3):
            assert await command(connection, "PING") == b"PONG"
        assert connections == 2
        connection.close()


async def test_a_reply_nobody_asked_for_drops_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"PING\r\n")
        writer.write(b"+PONG\r\n+EXTRA\r\n")
        await writer.drain()
        await read_all(reader, writer)

    async with resp_server(script) as url:
        connection = Connection(url)
        with anyio.fail_after(3):
            assert await command(connection, "PING") == b"PONG"
            await asyncio.sleep(0.05)
        protocol = connection._protocol
        assert protocol is not None and protocol.lost
        connection.close()


async def test_a_setup_reply_other_than_ok_is_refused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"SETNAME\r\n")
        writer.write(b"+MAYBE\r\n")
        await writer.drain()
        await read_all(reader, writer)

    async with resp_server(script) as url:
        connection = Connection(url, name="x")
        with anyio.fail_after(3), pytest.raises(Unreachable, match=r"refused CLIENT: b'MAYBE'"):
            await command(connection, "PING")


async def test_a_server_that_closes_mid_reply_fails_the_waiting_commands() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"GET\r\n")
        writer.write(b"$10\r\nhalf")
        await writer.drain()

    async with resp_server(script) as url:
        connection = Connection(url)
        with anyio.fail_after(3), pytest.raises(ConnectionClosed, match="lost"):
            await command(connection, "GET", "k")
        connection.close()


# --- property: replies pair with their commands under any split ------------------------------------------------------

resp_values = st.recursive(
    st.one_of(
        st.binary(max_size=40).map(lambda b: (b"$%d\r\n%s\r\n" % (len(b), b), b)),
        st.integers(-(2**63), 2**63 - 1).map(lambda n: (b":%d\r\n" % n, n)),
        st.from_regex(rb"\A[A-Za-z0-9 ]{0,20}\Z").map(lambda s: (b"+%s\r\n" % s, s)),
        st.just((b"$-1\r\n", None)),
    ),
    lambda inner: st.lists(inner, max_size=5).map(
        lambda items: (b"*%d\r\n" % len(items) + b"".join(w for w, _ in items), [v for _, v in items])
    ),
    max_leaves=10,
)
replies = st.lists(
    st.one_of(
        resp_values.map(lambda r: (r[0], r[1], False)),
        st.from_regex(r"\AERR [a-z ]{0,20}\Z").map(lambda m: (b"-%s\r\n" % m.encode(), m, True)),
    ),
    min_size=1,
    max_size=30,
)


class _Sink:
    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(replies=replies, cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20), posted=st.integers())
async def test_every_future_gets_its_own_reply_however_the_bytes_are_split(
    replies: list[tuple[bytes, Any, bool]], cuts: list[int], posted: int
) -> None:
    protocol = _Protocol(timeout=60)
    protocol.connection_made(_Sink())  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    # some commands are posted without a waiter (bit n of `posted`); their replies must be consumed all the same
    waiters: list[Waiter] = [None if posted >> n & 1 else loop.create_future() for n in range(len(replies))]
    protocol.write(b"", waiters)
    wire = b"".join(w for w, _, _ in replies)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    for start, end in itertools.pairwise(points):
        protocol.data_received(wire[start:end])
    assert not protocol.waiting and not protocol.batches and not protocol.lost
    for waiter, (_, value, error) in zip(waiters, replies, strict=True):
        if waiter is None:
            continue
        if error:
            assert isinstance(waiter.exception(), hiredis.ReplyError) and str(waiter.exception()) == value
        else:
            assert waiter.result() == value
    if protocol.timer is not None:
        protocol.timer.cancel()
