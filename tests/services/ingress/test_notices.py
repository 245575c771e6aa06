"""What an agent tells its upstream sessions outside a call goes through the servers' queues, against a real
valkey-server: its log level to the servers it has a session with (that log), its changed roots to every server."""

from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis

from services.ingress.callers import Session
from services.ingress.calls import Calls
from services.ingress.get_streams import GetStreams
from services.ingress.notices import Notices
from shared import streams
from shared.catalog import Catalog
from shared.messages import Call, ServerRecord
from shared.valkey import Outbox
from tests.conftest import entries

pytestmark = pytest.mark.anyio

REPLICA = "replica-1"
LOGS: dict[str, object] = {"tools": {}, "logging": {}}


@pytest.fixture
async def notices(valkey: Redis, valkey_url: str) -> AsyncIterator[tuple[Notices, Calls]]:
    outbox = Outbox(valkey_url)
    calls = Calls(valkey, outbox, REPLICA, GetStreams(), queue_limit=100, max_pending=100, retry_after=1, fair_share=8)
    try:
        yield Notices(calls, outbox, REPLICA, 30), calls
    finally:
        outbox.close()


def _catalog() -> Catalog:
    return Catalog(
        [
            ServerRecord(name="logs", url="http://127.0.0.1:1/mcp", state="Connected", capabilities=LOGS),
            ServerRecord(name="quiet", url="http://127.0.0.1:2/mcp", state="Connected", capabilities={"tools": {}}),
            ServerRecord(name="other", url="http://127.0.0.1:3/mcp", state="Connected", capabilities=LOGS),
            ServerRecord(name="down", url="http://127.0.0.1:4/mcp", state="Failed", capabilities=LOGS),
        ]
    )


async def _queued(valkey: Redis, server: str) -> list[Call]:
    return [Call.from_fields(fields) for _, fields in await entries(valkey, streams.calls(server))]


async def test_the_log_level_goes_to_the_agents_upstream_sessions_at_servers_that_log(
    valkey: Redis, notices: tuple[Notices, Calls]
) -> None:
    notice, calls = notices
    session = Session("agent-1", "2025-11-25", {}, "alice")
    await valkey.hset(streams.upstream_sessions("agent-1"), mapping={"logs": "s-1\n2025-11-25\nalice", "quiet": "x"})
    await notice.level(session, "error", _catalog())
    [call] = await _queued(valkey, "logs")
    assert (call.method, orjson.loads(call.params), call.session, call.principal) == (
        b"logging/setLevel",
        {"level": "error"},
        b"agent-1",
        b"alice",
    )
    assert await _queued(valkey, "quiet") == [] and await _queued(valkey, "other") == []  # no session there
    assert calls.pending == {}  # nobody waits for their outcome


async def test_changed_roots_go_to_every_live_server(valkey: Redis, notices: tuple[Notices, Calls]) -> None:
    notice, calls = notices
    await notice.roots_changed(Session("agent-1", "2025-11-25", {"roots": {}}, "alice"), _catalog())
    for server in ("logs", "quiet", "other"):
        [call] = await _queued(valkey, server)
        assert call.method == b"notifications/roots/list_changed" and call.session == b"agent-1"
    assert await _queued(valkey, "down") == [] and calls.pending == {}
