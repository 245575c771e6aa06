"""The upstream MCP session against a small real server on 127.0.0.1."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.http1 import Pool
from shared.upstream import UpstreamSession

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
