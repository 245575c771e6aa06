"""Probes: what a failure says of a server, servers muster refuses, and a new probe that starts from the published
record (adopting it when its spec is the same, so that a restarted discovery changes nothing agents see).
Upstreams are real sockets on 127.0.0.1: one that never answers, one that is closed."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from muster.stack import free_port
from services.discovery.config import DiscoverySettings
from services.discovery.probes import Probes, failure_state
from shared.http1 import ConnectFailed, ConnectionLost, ConnectTimeout, MalformedResponse
from shared.mcpserver import MCPServer, parse
from shared.messages import ServerRecord
from shared.upstream import StatusError, UpstreamFailure
from shared.valkey import Outbox

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("exc", "state"),
    [
        (StatusError(401, b"", None), "Auth Required"),
        (StatusError(503, b"", None), "Disconnected"),
        (StatusError(400, b"bad", None), "Failed"),
        (ConnectFailed("refused"), "Disconnected"),
        (ConnectTimeout("slow"), "Disconnected"),
        (ConnectionLost("reset", reused=False, received=False), "Disconnected"),
        (TimeoutError(), "Disconnected"),
        (MalformedResponse("garbage"), "Disconnected"),
        (UpstreamFailure("initialize failed"), "Failed"),
        (ValueError("odd"), "Failed"),
    ],
)
def test_a_failed_listing_says_whether_the_server_wants_a_login_is_unreachable_or_answers_wrongly(
    exc: BaseException, state: str
) -> None:
    assert failure_state(exc) == state


def server(name: str, url: str | None, **spec: Any) -> MCPServer:
    return parse(
        {
            "apiVersion": "muster.giantswarm.io/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": name, "namespace": "muster", "generation": 3},
            "spec": {"type": "streamable-http", "url": url, **spec},
        }
    )


def published(of: MCPServer, **changes: Any) -> ServerRecord:
    """The record a leader published for this server: listed, and (as collisions left it) not exposed."""
    record = ServerRecord(
        name=of.name,
        url=of.spec.url or "",
        state="Connected",
        prefix=of.name,
        exposed=False,
        error="collides",
        revision=7,
        tools=[{"name": "t", "inputSchema": {"type": "object"}}],
        spec=of.spec,
    )
    return record.model_copy(update=changes)


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    """An upstream that accepts connections and never answers: a listing of it takes its whole timeout."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    listening = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        for writer in held:
            writer.close()
        listening.close()


@pytest.fixture
async def probes(valkey_url: str) -> AsyncIterator[Probes]:
    outbox = Outbox(valkey_url)
    settings = DiscoverySettings(valkey_url=valkey_url, list_timeout=0.5, grace_seconds=30, refresh_seconds=30)
    probing = Probes(settings, outbox)
    try:
        yield probing
    finally:
        probing.stop_all()
        outbox.close()


async def attempted(probes: Probes, name: str) -> None:
    with anyio.fail_after(5):
        while probes.probes[name].state is None:
            probes.changed.clear()
            await probes.changed.wait()


async def test_a_server_muster_cannot_serve_is_failed_with_the_field_named_and_never_probed(probes: Probes) -> None:
    stdio = parse(
        {
            "apiVersion": "muster.giantswarm.io/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "local"},
            "spec": {"type": "stdio", "command": "mcp-kubernetes"},
        }
    )
    token_exchange = server(
        "remote",
        "http://127.0.0.1:9/mcp",
        auth={"tokenExchange": {"enabled": True, "dexTokenEndpoint": "https://dex/token", "connectorId": "c"}},
    )
    plain = server("plain", "http://127.0.0.1:9/mcp", auth={"type": "none"})
    probes.apply({"local": stdio}, {})
    records = probes.records()
    assert records["local"].state == "Failed" and records["local"].error.startswith("spec.type stdio")  # type: ignore[union-attr]
    assert probes.probes["local"].task is None
    health = probes.health(records)
    assert health["local"].state == "Failed" and health["local"].last_error == records["local"].error
    probes.apply({"plain": plain, "remote": token_exchange}, {})
    assert probes.probes["plain"].task is not None, "auth type none asks for nothing muster lacks"
    assert probes.probes["remote"].task is not None, "the workers call it with each user's exchanged token"


async def test_a_new_probe_adopts_the_published_record_of_the_same_spec_and_keeps_it_through_its_grace(
    probes: Probes, silent: str
) -> None:
    same = server("a", silent, family={"name": "mc", "instanceArg": "cluster"})
    probes.apply({"a": same}, {"a": published(same)})
    record = probes.records()["a"]
    assert record.state == "Connected" and record.tools == published(same).tools, "its tools stay while it is listed"
    assert record.exposed and record.error is None, "collisions are decided again"
    assert record.family is not None and record.family.name == "mc"
    assert probes.health(probes.records()) == {}, "no status before an attempt ended"
    await attempted(probes, "a")
    record = probes.records()["a"]
    assert record.state == "Connected" and record.tools == published(same).tools and record.error, "within grace"
    status = probes.health(probes.records())["a"]
    assert status.state == "Disconnected" and status.consecutive_failures == 1 and status.next_retry_after
    assert status.observed_generation == 3 and status.namespace == "muster" and status.tool_count == 0


async def test_a_probe_of_a_changed_spec_serves_the_old_record_only_until_its_first_attempt_ends(
    probes: Probes, silent: str
) -> None:
    before = server("a", f"http://127.0.0.1:{free_port()}/mcp")
    probes.apply({"a": server("a", silent, toolPrefix="renamed")}, {"a": published(before)})
    record = probes.records()["a"]
    assert record.prefix == "renamed" and record.tools == published(before).tools, "renamed at once"
    assert record.spec == probes.probes["a"].server.spec, (
        "under the new spec: a listing of the same tools changes nothing"
    )
    await attempted(probes, "a")
    record = probes.records()["a"]
    assert record.state == "Disconnected" and record.url == silent and record.tools == [], "no grace for it"


async def test_without_a_grace_period_an_adopted_record_goes_with_the_first_failure(valkey_url: str) -> None:
    outbox = Outbox(valkey_url)
    probing = Probes(DiscoverySettings(valkey_url=valkey_url, grace_seconds=0), outbox)
    down = server("a", f"http://127.0.0.1:{free_port()}/mcp")
    try:
        probing.apply({"a": down}, {"a": published(down)})
        assert probing.records()["a"].state == "Connected"
        await attempted(probing, "a")
        assert probing.records()["a"].state == "Disconnected"
    finally:
        probing.stop_all()
        outbox.close()


async def test_a_new_server_enters_the_records_once_an_attempt_ended(probes: Probes) -> None:
    closed = f"http://127.0.0.1:{free_port()}/mcp"
    probes.apply({"b": server("b", closed)}, {})
    assert probes.records() == {}
    await attempted(probes, "b")
    assert probes.records()["b"].state == "Disconnected"
    assert "cannot connect" in (probes.records()["b"].error or "")
