from typing import Any

import pytest
from redis.asyncio import Redis

from muster import status
from shared import records, streams
from shared.messages import ServerRecord
from shared.valkey import ensure_group

pytestmark = pytest.mark.anyio


async def fill(client: Redis) -> None:
    """A pipeline in the middle of its work: one server with a queue, one that failed, workers, a replica."""
    tools: list[dict[str, Any]] = [{"name": "get"}, {"name": "list"}]
    await records.store(
        client,
        [
            ServerRecord(name="alpha", url="http://a", state="Connected", tools=tools, prompts=[{"name": "p"}]),
            ServerRecord(name="beta", url="http://b", state="Failed", error="connection refused"),
        ],
    )
    await ensure_group(client, "alpha")
    for n in range(3):
        await client.xadd(streams.calls("alpha"), {b"n": b"%d" % n})
    await client.set(streams.depth("alpha"), 3)
    await client.xreadgroup(streams.GROUP_WORKERS, "w1", {streams.calls("alpha"): ">"}, count=1)
    await client.set(streams.worker_alive("w1"), b'{"running":1,"unsettled":2,"circuits":["beta"]}', px=10_000)
    await client.set(streams.worker_alive("w2"), b"1", px=10_000)
    await client.hset(streams.circuits("beta"), mapping={"w1": "open", "w2": "half-open"})
    await client.set(streams.ingress_alive("i1"), b'{"pending":4}', px=10_000)
    await client.set(streams.ingress_alive("i2"), b"not json", px=10_000)
    for _ in range(2):
        await client.xadd(streams.DEAD_LETTER, {b"entry": b"1-0"})
    await client.set(streams.DISCOVERY_LEADER, b"discovery-1")


async def test_status_reads_servers_queues_workers_replicas_and_dead_letters(valkey: Redis) -> None:
    await fill(valkey)
    found = await status.read(valkey, "redis://:secret@127.0.0.1:1/0")
    assert found.valkey == "redis://:***@127.0.0.1:1/0"
    alpha, beta = found.servers
    assert (alpha.name, alpha.state, alpha.tools, alpha.prompts) == ("alpha", "Connected", 2, 1)
    assert (alpha.depth, alpha.length, alpha.lag, alpha.running, alpha.consumers) == (3, 3, 2, 1, 1)
    assert (beta.name, beta.state, beta.error, beta.depth, beta.lag, beta.running) == (
        "beta",
        "Failed",
        "connection refused",
        0,
        None,
        0,
    )
    assert found.workers == ["w1", "w2"] and found.leader == "discovery-1" and found.dead_letters == 2
    assert (alpha.circuits, beta.circuits, found.unsettled) == ({}, {"w1": "open", "w2": "half-open"}, 2)
    assert [(r.id, r.pending) for r in found.ingress] == [("i1", 4), ("i2", 0)] and found.in_flight == 4
    as_json = found.as_json()
    assert as_json["in_flight"] == 4 and as_json["servers"][0]["lag"] == 2 and as_json["servers"][1]["lag"] is None


async def test_the_terminal_view_has_a_summary_and_one_row_per_server(valkey: Redis) -> None:
    await fill(valkey)
    text = status.render(await status.read(valkey, "redis://127.0.0.1:1/0"))
    lines = text.splitlines()
    assert "discovery leader  discovery-1" in text and "ingress replicas  2   calls in flight 4" in text
    assert "workers alive     2   outcomes waiting for valkey 2" in text and "dead letters      2" in text
    header = next(n for n, line in enumerate(lines) if line.startswith("SERVER"))
    columns = ["SERVER", "STATE", "TOOLS", "DEPTH", "LAG", "RUNNING", "WORKERS", "CIRCUIT", "ERROR"]
    assert lines[header].split() == columns
    assert lines[header + 1].split() == ["alpha", "Connected", "2", "3", "2", "1", "1", "closed"]
    beta = ["beta", "Failed", "0", "0", "?", "0", "0", "half-open", "on", "1,", "open", "on", "1", "connection"]
    assert lines[header + 2].split() == [*beta, "refused"]


async def test_an_empty_valkey_says_so(valkey: Redis) -> None:
    found = await status.read(valkey, "redis://127.0.0.1:1/0")
    assert (found.servers, found.workers, found.ingress, found.leader, found.dead_letters) == ([], [], [], None, 0)
    assert status.render(found).endswith("no servers in the catalog")
