"""The lean HTTP client against a real server on 127.0.0.1 that misbehaves on request."""

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

from shared.http1 import ConnectFailed, ConnectionLost, Pool, Timeout

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
