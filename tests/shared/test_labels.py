"""Label bounding and classification; the connect error classes come from real failures on 127.0.0.1."""

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp_types.methods
import mcp_types.version
import pytest

from muster.stack import free_port
from shared import errors, labels
from shared.http1 import ConnectFailed, HttpError, Pool
from shared.labels import OTHER, LabelBounds, classify, connect_error_class
from shared.upstream import StatusError, UpstreamFailure

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Entry:
    """What the label bounds read of a server's catalog entry."""

    name: str
    prefix: str
    tools: list[dict[str, Any]]
    prompts: list[dict[str, Any]]


def entry(name: str, prefix: str, tools: list[str], prompts: tuple[str, ...] = ()) -> Entry:
    return Entry(name, prefix, [{"name": t} for t in tools], [{"name": p} for p in prompts])


def test_the_written_out_methods_and_versions_are_those_of_the_mcp_package() -> None:
    m = mcp_types.methods
    spec = {
        name
        for table in (m.CLIENT_REQUESTS, m.CLIENT_NOTIFICATIONS, m.SERVER_REQUESTS, m.SERVER_NOTIFICATIONS)
        for name, _ in table
    }
    assert spec == labels.METHODS
    assert set(mcp_types.version.KNOWN_PROTOCOL_VERSIONS) == labels.PROTOCOL_VERSIONS


def test_only_names_of_the_catalog_pass_as_label_values() -> None:
    bounds = LabelBounds()
    bounds.update([entry("gazelle", "gazelle", ["list", "get"], ("triage",)), entry("fixture", "", ["echo"])])
    assert bounds.server("gazelle") == "gazelle" and bounds.server("evil") == OTHER
    assert [bounds.tool(t) for t in ("list", "x_gazelle_list", "echo", "x_made_up", "")] == [
        "list",
        "x_gazelle_list",
        "echo",
        OTHER,
        "",
    ]
    assert bounds.prompt("x_gazelle_triage") == "x_gazelle_triage" and bounds.prompt("x") == OTHER
    assert bounds.method("tools/call") == "tools/call" and bounds.method("tools/delete_everything") == OTHER
    assert bounds.protocol("2025-06-18") == "2025-06-18" and bounds.protocol("1999-01-01") == OTHER
    assert bounds.error_type("-32602") == "-32602" and bounds.error_type("-31337") == OTHER
    assert bounds.error_type("http_503") == "http_503" and bounds.error_type("http_5033") == OTHER
    bounds.update([entry("fixture", "", ["echo"])])
    assert bounds.server("gazelle") == OTHER and bounds.tool("list") == OTHER


@pytest.mark.parametrize(
    ("code", "is_error", "expected"),
    [
        (None, False, ("ok", "")),
        (None, True, ("tool_error", "tool_error")),
        (errors.INVALID_PARAMS, False, ("upstream_error", "-32602")),
        (errors.DEADLINE_EXCEEDED, False, ("deadline", "-32001")),
        (errors.QUEUE_FULL, False, ("rejected", "-32003")),
        (errors.UPSTREAM_UNAVAILABLE, False, ("unreachable", "-32004")),
        (errors.OUTCOME_UNKNOWN, False, ("unknown", "-32005")),
        (errors.SERVICE_UNAVAILABLE, False, ("unavailable", "-32006")),
        (errors.CANCELLED, False, ("cancelled", "-32800")),
        (-31337, False, ("upstream_error", OTHER)),
    ],
)
def test_an_outcome_is_classified_by_its_code(code: int | None, is_error: bool, expected: tuple[str, str]) -> None:
    assert classify(code, is_error) == expected
    assert expected[0] in labels.OUTCOMES


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Servers:
    """Misbehaving servers on 127.0.0.1; every connection they took is closed when the test ends."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, handler: Handler) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            await handler(reader, writer)

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        self.servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        for server in self.servers:
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports finish closing


async def _failure(url: str, deadline: float | None = None) -> BaseException:
    pool = Pool(url, connect_timeout=2)
    try:
        loop = asyncio.get_running_loop()
        await pool.request(b"POST", [], b"{}", deadline=None if deadline is None else loop.time() + deadline)
    except (HttpError, UpstreamFailure) as exc:
        return exc
    finally:
        pool.close()
    raise AssertionError("the request succeeded")


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    started = Servers()
    yield started
    await started.close()


async def test_a_closed_port_is_refused() -> None:
    assert connect_error_class(await _failure(f"http://127.0.0.1:{free_port()}/mcp")) == "refused"


async def test_tls_to_a_plain_http_server_is_tls(servers: Servers) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    port = await servers.start(plain)
    assert connect_error_class(await _failure(f"https://127.0.0.1:{port}/mcp")) == "tls"


async def test_a_server_that_never_answers_is_a_timeout(servers: Servers) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    port = await servers.start(silent)
    assert connect_error_class(await _failure(f"http://127.0.0.1:{port}/mcp", deadline=0.2)) == "timeout"


async def test_a_connection_cut_mid_request_is_a_reset(servers: Servers) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    port = await servers.start(cut)
    assert connect_error_class(await _failure(f"http://127.0.0.1:{port}/mcp", deadline=5)) == "reset"


def test_statuses_dns_and_broken_answers_have_their_classes() -> None:
    assert connect_error_class(StatusError(503, b"", None)) == "http_503"
    assert connect_error_class(UpstreamFailure("not JSON")) == "protocol"
    try:
        raise ConnectFailed("cannot connect") from socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    except ConnectFailed as exc:
        assert connect_error_class(exc) == "dns"
    assert connect_error_class(OSError(113, "No route to host")) == "network"


def test_error_codes_are_read_off_the_front_or_parsed() -> None:
    assert labels.code_of(errors.QueueFull("full", 1).body()) == errors.QUEUE_FULL
    assert labels.code_of(b'{"message":"nope","code":-32602}') == -32602
    assert labels.code_of(b'{"code":-32001 ,"message":"x"}') == -32001
    assert labels.code_of(b'{"code":true}') is None and labels.code_of(b"not json") is None
    assert labels.code_of(b"[]") is None
