"""The lean HTTP client against real servers on 127.0.0.1 that misbehave on request: a small HTTP server with a
path per misbehaviour, and raw socket servers that send exactly what a test scripts. The parsing path's property
tests (any split of a valid response into reads) are at the end."""

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import http1
from shared.http1 import (
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    DeadlineTimeout,
    FirstByteTimeout,
    IdleTimeout,
    MalformedResponse,
    Pool,
    Response,
    ResponseTooLarge,
    Timeout,
)
from tests.shared.rawserver import Script, raw_server, read_all, read_request

pytestmark = pytest.mark.anyio


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _handlers.add(asyncio.current_task())  # type: ignore[arg-type]
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            body = await reader.readexactly(length)
            path = head.split(b" ")[1]
            if path == b"/json":
                payload = b'{"echo":' + body + b"}"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(payload), payload)
                )
            elif path == b"/sse":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for n, event in enumerate(
                    [
                        b'event: message\r\ndata: {"n":1}\r\n\r\n',
                        b': comment\n\ndata: {"n":',
                        b'2}\n\nid: 3\ndata: {"n":3}\n\n',
                    ]
                ):
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    await asyncio.sleep(0.01 * n)
                writer.write(b"0\r\n\r\n")
            elif path == b"/sse-answer-then-linger":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                event = b'data: {"answer":1}\n\n'
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.3)
                writer.write(b"0\r\n\r\n")
            elif path == b"/close-mid-body":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                await writer.drain()
                writer.close()
                return
            elif path == b"/close-now":
                writer.close()
                return
            elif path == b"/slow":
                await asyncio.sleep(5)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


_handlers: set[asyncio.Task[None]] = set()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    srv = await asyncio.start_server(_handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield f"http://127.0.0.1:{port}"
        for task in _handlers:
            task.cancel()
        await asyncio.gather(*_handlers, return_exceptions=True)
        _handlers.clear()


async def test_requests_reuse_one_keep_alive_connection(server: str) -> None:
    pool = Pool(server + "/json")
    for n in range(3):
        response = await pool.request(b"POST", [(b"Content-Type", b"application/json")], b"%d" % n)
        assert response.status == 200 and response.body == b'{"echo":%d}' % n
    assert len(pool._idle) == 1 and pool._idle[0].uses == 3
    pool.close()


async def test_server_sent_events_arrive_one_by_one_across_chunk_boundaries(server: str) -> None:
    pool = Pool(server + "/sse")
    events: list[bytes] = []
    response = await pool.request(b"POST", [], b"", on_event=events.append)
    assert events == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert response.events == 3 and response.body == b""
    pool.close()


async def test_an_awaited_event_answers_at_once_and_the_connection_is_kept_for_the_next_request(server: str) -> None:
    pool = Pool(server + "/sse-answer-then-linger")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pool.request(b"POST", [], b"", on_event=lambda data: data == b'{"answer":1}')
    assert loop.time() - started < 0.2  # not the 0.3 s the server takes to end its stream
    await asyncio.sleep(0.5)
    assert len(pool._idle) == 1  # the stream ended, so the connection went back to the pool
    pool.close()


async def test_a_connection_closed_mid_body_is_lost_with_bytes_received(server: str) -> None:
    pool = Pool(server + "/close-mid-body")
    with pytest.raises(ConnectionLost) as info:
        await pool.request(b"POST", [], b"")
    assert info.value.received and not info.value.reused


async def test_a_connection_closed_before_any_byte_says_so(server: str) -> None:
    pool = Pool(server + "/close-now")
    with pytest.raises(ConnectionLost) as info:
        await pool.request(b"POST", [], b"")
    assert not info.value.received


async def test_the_deadline_ends_a_request_that_gets_no_answer(server: str) -> None:
    pool = Pool(server + "/slow")
    loop = asyncio.get_running_loop()
    with anyio.fail_after(2), pytest.raises(Timeout):
        await pool.request(b"POST", [], b"", deadline=loop.time() + 0.2)
    assert pool._idle == []


async def test_no_listener_is_a_connect_failure() -> None:
    with socket_port() as port:
        pass
    pool = Pool(f"http://127.0.0.1:{port}/mcp")
    with pytest.raises(ConnectFailed):
        await pool.request(b"POST", [], b"")


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# --- raw servers: each test scripts what the server sends ------------------------------------------------------------


def answer(*pieces: bytes, pause: float = 0.0, then: Script | None = None) -> Script:
    """A server that reads one request and writes `pieces` one by one (each flushed, `pause` apart)."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        if then is not None:
            await then(reader, writer)

    return script


async def fetch(script: Script, method: bytes = b"POST", **options: object) -> Response:
    on_event = options.pop("on_event", None)
    deadline = options.pop("deadline", None)
    async with raw_server(script) as port:
        pool = Pool(f"http://127.0.0.1:{port}/mcp", **options)  # type: ignore[arg-type]
        try:
            with anyio.fail_after(10):
                return await pool.request(method, [], b"{}", deadline=deadline, on_event=on_event)  # type: ignore[arg-type]
        finally:
            pool.close()


def expect_limit(info: pytest.ExceptionInfo[ResponseTooLarge], limit: str, value: int) -> None:
    assert info.value.limit == limit and info.value.value == value
    assert f"{limit}={value}" in str(info.value)


async def test_an_oversized_status_line_fails_naming_its_limit() -> None:
    with pytest.raises(ResponseTooLarge) as info:
        await fetch(answer(b"HTTP/1.1 200 " + b"O" * 20_000 + b"\r\nContent-Length: 0\r\n\r\n"))
    expect_limit(info, "max_status_line", 8192)


async def test_a_thousand_headers_fail_at_the_header_count_limit() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(1000)) + b"Content-Length: 0\r\n\r\n"
    with pytest.raises(ResponseTooLarge) as info:
        await fetch(answer(head))
    expect_limit(info, "max_headers", 100)


async def test_an_endless_header_is_cut_off_at_the_head_limit_without_reading_on() -> None:
    sent = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        for _ in range(1600):  # up to 100 MiB, as long as the client keeps reading
            writer.write(b"a" * 65536)
            await writer.drain()
            sent += 65536

    with pytest.raises(ResponseTooLarge) as info:
        await fetch(script, max_head_bytes=32 * 1024)
    expect_limit(info, "max_head_bytes", 32 * 1024)
    assert sent < 16 * 1024 * 1024  # what the kernel's buffers hold, not the 100 MiB on offer


async def test_a_declared_content_length_over_the_body_limit_fails_before_the_body_is_read() -> None:
    with pytest.raises(ResponseTooLarge) as info:
        await fetch(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", then=read_all), max_body_bytes=10**6)
    expect_limit(info, "max_body_bytes", 10**6)


@pytest.mark.parametrize("framing", ["chunked", "close-delimited"])
async def test_a_body_over_the_limit_fails_as_it_arrives(framing: str) -> None:
    sent = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        chunked = framing == "chunked"
        writer.write(b"HTTP/1.1 200 OK\r\n" + (b"Transfer-Encoding: chunked\r\n" if chunked else b"") + b"\r\n")
        for _ in range(1600):
            writer.write(b"10000\r\n" + b"b" * 65536 + b"\r\n" if chunked else b"b" * 65536)
            await writer.drain()
            sent += 65536

    with pytest.raises(ResponseTooLarge) as info:
        await fetch(script, max_body_bytes=1 << 20)
    expect_limit(info, "max_body_bytes", 1 << 20)
    assert sent < 20 * 1024 * 1024


async def test_a_data_line_that_never_ends_is_bounded_by_the_event_limit() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: ")
        for _ in range(1600):
            writer.write(b"d" * 65536)
            await writer.drain()

    events: list[bytes] = []
    with pytest.raises(ResponseTooLarge) as info:
        await fetch(script, method=b"GET", on_event=events.append, max_body_bytes=1 << 20)
    expect_limit(info, "max_event_bytes", 1 << 20)
    assert events == []


async def test_an_endless_trailer_section_is_bounded() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: ")
        for _ in range(1600):
            writer.write(b"t" * 65536)
            await writer.drain()

    with pytest.raises(ResponseTooLarge) as info:
        await fetch(script)
    expect_limit(info, "max_head_bytes", 64 * 1024)


async def test_interim_responses_are_skipped() -> None:
    response = await fetch(
        answer(
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            pause=0.02,
        )
    )
    assert response.status == 200 and response.body == b"{}" and b"link" not in response.headers


async def test_a_chunked_body_with_trailers_arrives_whole_when_every_byte_is_a_read_of_its_own() -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'7;ext=1\r\n{"a":12\r\n1A\r\n' + b"3" * 26 + b"\r\n1\r\n}\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    )
    script = answer(*(wire[n : n + 1] for n in range(len(wire))), pause=0.001)
    response = await fetch(script)
    assert response.body == b'{"a":12' + b"3" * 26 + b"}"
    assert response.trailers == {b"x-checksum": b"abc", b"x-other": b"1"}
    assert response.headers[b"content-type"] == b"application/json"


async def test_a_crlf_split_across_reads_still_ends_its_line() -> None:
    response = await fetch(
        answer(b"HTTP/1.1 200 OK\r", b"\nContent-Length: 2\r", b"\n\r", b"\nok", pause=0.02),
    )
    assert response.status == 200 and response.body == b"ok"


async def test_a_connection_is_reused_after_chunked_trailers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n")
            await writer.drain()

    async with raw_server(script) as port:
        pool = Pool(f"http://127.0.0.1:{port}/mcp")
        for _ in range(3):
            response = await pool.request(b"POST", [], b"")
            assert response.body == b"ok" and response.trailers == {b"x-t": b"1"}
        assert len(pool._idle) == 1 and pool._idle[0].uses == 3
        pool.close()


async def test_a_server_that_accepts_and_never_answers_trips_the_first_byte_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(FirstByteTimeout, match=r"first_byte_timeout=0\.2s"):
        await fetch(read_all, first_byte_timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0


async def test_without_a_first_byte_timeout_the_deadline_ends_the_wait() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(DeadlineTimeout):
        await fetch(read_all, deadline=loop.time() + 0.2)


@pytest.mark.parametrize("part", ["head", "body"])
async def test_a_slowloris_response_is_ended_by_the_deadline_though_each_byte_keeps_it_from_idling(part: str) -> None:
    wire = b"HTTP/1.1 200 OK\r\n" + (b"X-Slow: " if part == "head" else b"Content-Length: 1000\r\n\r\n") + b"s" * 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineTimeout):
        await fetch(answer(*(wire[n : n + 1] for n in range(len(wire))), pause=0.02),
                    deadline=loop.time() + 0.5, idle_timeout=0.2)  # fmt: skip
    assert loop.time() - started < 2


async def test_a_response_that_stops_midway_trips_the_idle_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(IdleTimeout, match=r"idle_timeout=0\.3s"):
        await fetch(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", then=read_all), idle_timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.0


async def test_an_event_stream_with_keepalive_comments_does_not_idle_out_but_a_silent_one_does() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    events: list[bytes] = []

    def on_event(data: bytes) -> bool:
        events.append(data)
        return True

    keepalives = [b": keepalive\n\n"] * 8  # 8 x 0.1 s, with an idle timeout of 0.3 s
    response = await fetch(
        answer(head, *keepalives, b'data: {"late":1}\n\n', pause=0.1),
        method=b"GET",
        idle_timeout=0.3,
        on_event=on_event,
    )
    assert response.status == 200 and events == [b'{"late":1}']
    with pytest.raises(IdleTimeout):
        await fetch(answer(head, b": one\n\n", then=read_all), method=b"GET", idle_timeout=0.3, on_event=events.append)


async def test_a_server_that_closes_mid_chunk_loses_the_connection() -> None:
    with pytest.raises(ConnectionLost) as info:
        await fetch(answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\npartial"))
    assert info.value.received and info.value.sent


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    ],
)
async def test_what_is_not_an_http_response_is_malformed(wire: bytes) -> None:
    with pytest.raises(MalformedResponse):
        await fetch(answer(wire, then=read_all))


async def test_an_exception_in_on_event_reaches_the_caller() -> None:
    def on_event(data: bytes) -> bool:
        raise ValueError(data.decode())

    with pytest.raises(ValueError, match="boom"):
        await fetch(answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: boom\n\n"),
                    on_event=on_event)  # fmt: skip


async def test_one_32_mib_event_in_64_kib_reads_is_decoded_in_linear_time() -> None:
    size = 32 * 1024 * 1024
    payload = b"x" * size
    pieces = [payload[n : n + 65536] for n in range(0, size, 65536)]
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: "
    events: list[int] = []

    def on_event(data: bytes) -> bool:
        events.append(len(data))
        return True

    started = time.monotonic()
    await fetch(
        answer(head, *pieces, b"\n\n"),
        on_event=on_event,
        max_body_bytes=64 * 1024 * 1024,
    )
    elapsed = time.monotonic() - started
    assert events == [size]
    assert elapsed < 5  # quadratic re-joining took 19 s on this machine for the decoder alone
    print(f"\n32 MiB event over a socket in 64 KiB writes: {elapsed:.2f} s")


@contextmanager
def full_backlog() -> Iterator[int]:
    """A listening socket whose accept queue is full, so that a new connection's SYN goes unanswered."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # Linux queues backlog + 1; a few more make sure of it
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            time.sleep(0.05)
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def test_a_connection_that_is_never_accepted_trips_the_connect_timeout() -> None:
    with full_backlog() as port:
        pool = Pool(f"http://127.0.0.1:{port}/mcp", connect_timeout=0.3)
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(ConnectTimeout, match=r"connect_timeout=0\.3s") as info:
            await pool.request(b"POST", [], b"")
        assert 0.3 <= time.monotonic() - started < 2
        assert isinstance(info.value, ConnectFailed) and isinstance(info.value, Timeout)  # not sent; timed out


# --- property: any split of a valid response into reads yields the same response -------------------------------------


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda t: t not in ("content-length", "transfer-encoding", "connection")
)
header_value = st.binary(max_size=30).map(lambda b: bytes(c for c in b if 0x21 <= c <= 0x7E))


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, int, dict[bytes, bytes], bytes, dict[bytes, bytes] | None]:
    interim = b"".join(
        b"HTTP/1.1 %d Interim\r\nX-Hint: %d\r\n\r\n" % (code, n)
        for n, code in enumerate(draw(st.lists(st.sampled_from([100, 103]), max_size=2)))
    )
    status = draw(st.sampled_from([200, 201, 202, 400, 404, 500, 503]))
    headers = dict(draw(st.lists(st.tuples(token.map(str.encode), header_value), max_size=8)))
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    trailers: dict[bytes, bytes] | None = None
    head = b"HTTP/1.1 %d Some Reason\r\n" % status + b"".join(b"%s: %s\r\n" % kv for kv in headers.items())
    if framing == "length":
        wire = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        sizes = draw(st.lists(st.integers(1, 64), max_size=10))
        pieces, rest = [], body
        for size in sizes:
            if rest:
                pieces.append(rest[:size])
                rest = rest[size:]
        if rest:
            pieces.append(rest)
        trailers = dict(draw(st.lists(st.tuples(token.map(str.encode), header_value), max_size=3))) or None
        wire = head + b"Transfer-Encoding: chunked\r\n\r\n"
        wire += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n"
        wire += b"".join(b"%s: %s\r\n" % kv for kv in (trailers or {}).items()) + b"\r\n"
    else:
        wire = head + b"Connection: close\r\n\r\n" + body
    return interim + wire, status, headers, body, trailers


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(response=responses(), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=25))
async def test_any_split_of_a_valid_response_into_reads_yields_the_same_response(
    response: tuple[bytes, int, dict[bytes, bytes], bytes, dict[bytes, bytes] | None], cuts: list[int]
) -> None:
    wire, status, headers, body, trailers = response
    pool = Pool("http://127.0.0.1:1/mcp")
    conn = http1._Connection(pool)
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    pool._idle.append(conn)
    task = asyncio.ensure_future(pool.request(b"POST", [], b"{}"))
    await asyncio.sleep(0)  # the request is written
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    for start, end in itertools.pairwise(points):
        conn.data_received(wire[start:end])
    if not task.done():
        conn.connection_lost(None)  # the end of a close-delimited body
    result = await task
    assert result.status == status and result.body == body and result.trailers == trailers
    assert {k: v for k, v in result.headers.items() if k not in (b"content-length", b"transfer-encoding",
                                                                b"connection")} == headers  # fmt: skip


async def test_on_head_tells_when_the_final_head_is_in_while_the_stream_goes_on() -> None:
    heads: list[tuple[int, bytes | None]] = []
    head = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    async with raw_server(answer(head, then=read_all)) as port:
        pool = Pool(f"http://127.0.0.1:{port}/mcp")
        stream = asyncio.ensure_future(
            pool.request(
                b"GET", [], on_event=lambda data: False, on_head=lambda s, h: heads.append((s, h.get(b"content-type")))
            )
        )
        try:
            with anyio.fail_after(5):
                while not heads:
                    await anyio.sleep(0.01)
            assert heads == [(200, b"text/event-stream")] and not stream.done()  # the 103 is not the head
        finally:
            stream.cancel()
            pool.close()
