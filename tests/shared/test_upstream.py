"""The upstream MCP session against small real servers on 127.0.0.1."""

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

from shared.http1 import Pool
from shared.upstream import SessionLost, StatusError, UpstreamSession
from tests.shared.rawserver import Script, raw_server, read_request

pytestmark = pytest.mark.anyio

INIT = (
    b'{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"s"}}}'
)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            body = await reader.readexactly(length)
            if b'"initialize"' in body:
                await asyncio.sleep(0.2)  # a slow handshake
                request_id = body.split(b'"id":', 1)[1].split(b",", 1)[0]
                payload = INIT % request_id
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: abc\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))  # fmt: skip
            else:
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def url() -> AsyncIterator[str]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"


async def test_a_caller_cancelled_during_the_handshake_does_not_cancel_it_for_the_others(url: str) -> None:
    pool = Pool(url)
    session = UpstreamSession(pool)
    first = asyncio.ensure_future(session.ensure_open())
    second = asyncio.ensure_future(session.ensure_open())
    await asyncio.sleep(0.05)
    first.cancel()
    await second
    assert session.is_open and session.session_id == b"abc"
    with pytest.raises(asyncio.CancelledError):
        await first
    pool.close()


def _answering(
    status: bytes, body: bytes = b"", content_type: bytes = b"application/json", heads: list[bytes] | None = None
) -> Script:
    """A server that answers every request with one status and body, and keeps the request heads."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            if heads is not None:
                heads.append(head)
            writer.write(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, content_type, len(body), body))  # fmt: skip
            await writer.drain()

    return script


NAMES_THE_SESSION = b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}'


@pytest.mark.parametrize(
    ("status", "body"),
    [(b"404 Not Found", b"Session not found"), (b"400 Bad Request", NAMES_THE_SESSION)],
)
async def test_a_404_or_a_400_naming_the_session_means_the_session_is_lost(status: bytes, body: bytes) -> None:
    async with raw_server(_answering(status, body)) as port:
        pool = Pool(f"http://127.0.0.1:{port}/mcp")
        session = UpstreamSession(pool)
        for attempt in (
            lambda: session.request(b"tools/call", b"{}"),
            lambda: session.notify(b"notifications/roots/list_changed", b"{}"),
            lambda: session.respond(3, b'"result":{}'),
        ):
            session.adopt(b"s-1", b"2025-11-25")
            with pytest.raises(SessionLost):
                await attempt()
            assert not session.is_open and session.session_id == b"s-1"  # the lost id, for replacing its binding
        pool.close()


async def test_a_400_about_something_else_is_the_requests_fault_not_the_sessions() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Invalid params"}}'
    async with raw_server(_answering(b"400 Bad Request", body)) as port:
        pool = Pool(f"http://127.0.0.1:{port}/mcp")
        session = UpstreamSession(pool)
        session.adopt(b"s-1", b"2025-11-25")
        with pytest.raises(StatusError):
            await session.request(b"tools/call", b"{}")
        assert session.is_open
        pool.close()


async def test_an_adopted_session_speaks_with_its_id_and_version() -> None:
    heads: list[bytes] = []
    async with raw_server(_answering(b"202 Accepted", heads=heads)) as port:
        pool = Pool(f"http://127.0.0.1:{port}/mcp")
        session = UpstreamSession(pool, [(b"X-Cluster", b"k8s")])
        session.adopt(b"opened-elsewhere", b"2025-06-18")
        assert session.is_open
        await session.notify(b"notifications/roots/list_changed", b"{}")
        head = heads[0].lower()
        assert b"mcp-session-id: opened-elsewhere" in head and b"mcp-protocol-version: 2025-06-18" in head
        assert b"x-cluster: k8s" in head
        pool.close()


async def test_listening_tells_when_the_stream_is_established_and_resumes_where_it_ended() -> None:
    heads: list[bytes] = []

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        heads.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        writer.write(b'id: e-7\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"data":1}}\n\n')
        writer.write(b'data: {"jsonrpc":"2.0","id":1,"result":{}}\n\n')  # not a message for the listener
        await writer.drain()

    async with raw_server(stream) as port:
        pool = Pool(f"http://127.0.0.1:{port}/mcp")
        session = UpstreamSession(pool)
        session.adopt(b"s-1", b"2025-11-25")
        established: list[int] = []
        messages: list[bytes] = []
        with anyio.fail_after(5):
            response = await session.listen(
                lambda message, data: messages.append(data),
                on_head=lambda status, headers: established.append(status),
                last_event_id=b"e-6",
            )
        assert established == [200] and response.last_event_id == b"e-7" and len(messages) == 1
        assert b"last-event-id: e-6" in heads[0].lower()
        pool.close()


@pytest.mark.parametrize(("status", "lost"), [(b"400 Bad Request", True), (b"405 Method Not Allowed", False)])
async def test_a_get_stream_refused_for_the_session_is_lost_and_one_refused_as_such_is_the_callers(
    status: bytes, lost: bool
) -> None:
    async with raw_server(_answering(status, NAMES_THE_SESSION)) as port:
        pool = Pool(f"http://127.0.0.1:{port}/mcp")
        session = UpstreamSession(pool)
        session.adopt(b"s-1", b"2025-11-25")
        if lost:
            with pytest.raises(SessionLost):
                await session.listen(lambda message, data: None)
        else:
            assert (await session.listen(lambda message, data: None)).status == 405
        pool.close()
