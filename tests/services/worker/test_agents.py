"""Each agent session's own upstream session, shared by the workers through its binding in Valkey: two workers
(two dispatchers, each with its own connections and cache) against the stand-in of mcp-kubernetes, which names
its sessions, counts them, and forgets one on request."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from services.worker.bindings import Binding
from services.worker.upstream import ForeignSession, Upstream
from shared import errors, streams
from shared.mcpserver import Auth, MCPServerSpec
from shared.messages import Call, ReplyKind
from tests.conftest import StandIn
from tests.services.worker.conftest import NS, Bench

pytestmark = pytest.mark.anyio


def _deadline(seconds: float = 10) -> float:
    return asyncio.get_running_loop().time() + seconds


async def _run(bench: Bench, upstream: Upstream, call: Call) -> tuple[ReplyKind, bytes]:
    return await bench.dispatcher.executor.execute(upstream, call, _deadline())


async def _binding(bench: Bench, agent: bytes, server: str) -> Binding | None:
    raw: Any = await bench.valkey.hget(streams.upstream_sessions(agent.decode()), server)
    return Binding.decode(raw) if raw else None


async def _commands(bench: Bench, name: str) -> int:
    stats: Any = await bench.valkey.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


async def test_an_agent_sessions_calls_share_its_own_upstream_session_whichever_worker_runs_them(
    bench: Bench, other: Bench, k8s: StandIn
) -> None:
    agent = await bench.agent("agent-1")
    here, there = bench.upstream(k8s), other.upstream(k8s)
    opened = k8s.stats()["sessions"]
    assert (await _run(bench, here, bench.call("k8s", "get", NS, session=agent)))[0] is ReplyKind.RESULT
    binding = await _binding(bench, agent, "k8s")
    assert binding is not None and binding.principal == b"anonymous"
    assert here.bound[agent].session.session_id == binding.session_id
    assert (await _run(other, there, other.call("k8s", "get", NS, session=agent)))[0] is ReplyKind.RESULT
    assert there.bound[agent].session.session_id == binding.session_id  # adopted, not opened again
    assert k8s.stats()["sessions"] == opened + 1
    # The steady state is a hit in the worker's cache: no Valkey read.
    await bench.valkey.config_resetstat()
    assert (await _run(bench, here, bench.call("k8s", "get", NS, session=agent)))[0] is ReplyKind.RESULT
    await bench.outbox.drain()
    assert await _commands(bench, "hget") == 0 and await _commands(bench, "pttl") == 0


async def test_another_agent_session_gets_another_upstream_session(bench: Bench, k8s: StandIn) -> None:
    first, second = await bench.agent("agent-1"), await bench.agent("agent-2")
    upstream = bench.upstream(k8s)
    await _run(bench, upstream, bench.call("k8s", "get", NS, session=first))
    await _run(bench, upstream, bench.call("k8s", "get", NS, session=second))
    one, two = await _binding(bench, first, "k8s"), await _binding(bench, second, "k8s")
    assert one is not None and two is not None and one.session_id != two.session_id


async def test_a_session_the_upstream_forgot_is_opened_again_once_for_every_worker(
    bench: Bench, other: Bench, k8s: StandIn
) -> None:
    agent = await bench.agent("agent-1")
    here, there = bench.upstream(k8s), other.upstream(k8s)
    await _run(bench, here, bench.call("k8s", "get", NS, session=agent))
    await _run(other, there, other.call("k8s", "get", NS, session=agent))
    lost = await _binding(bench, agent, "k8s")
    opened = k8s.stats()["sessions"]
    # Each worker meets the loss once (the stand-in takes any well-formed id until it is told otherwise).
    k8s.fault(action="session_reject", method="tools/call", count=1)
    assert (await _run(bench, here, bench.call("k8s", "get", NS, session=agent)))[0] is ReplyKind.RESULT
    k8s.fault(action="session_reject", method="tools/call", count=1)
    assert (await _run(other, there, other.call("k8s", "get", NS, session=agent)))[0] is ReplyKind.RESULT
    new = await _binding(bench, agent, "k8s")
    assert new is not None and lost is not None and new.session_id != lost.session_id
    assert here.bound[agent].session.session_id == there.bound[agent].session.session_id == new.session_id
    assert k8s.stats()["sessions"] == opened + 1  # the second worker read the new binding


async def test_a_binding_is_never_used_for_another_principal(bench: Bench, other: Bench, k8s: StandIn) -> None:
    agent = await bench.agent("agent-1", "alice@example.com")
    here, there = bench.upstream(k8s), other.upstream(k8s)
    alice = bench.call("k8s", "get", NS, session=agent, principal=b"alice@example.com")
    assert (await _run(bench, here, alice))[0] is ReplyKind.RESULT
    before = k8s.stats()["tools"]["get"]
    for worker, upstream in ((bench, here), (other, there)):  # a cached binding, and one read from Valkey
        mallory = worker.call("k8s", "get", NS, session=agent, principal=b"mallory@example.com")
        kind, body = await _run(worker, upstream, mallory)
        assert kind is ReplyKind.ERROR and orjson.loads(body)["code"] == errors.INVALID_REQUEST
    assert k8s.stats()["tools"]["get"] == before  # nothing ran
    binding = await _binding(bench, agent, "k8s")
    assert binding is not None and binding.principal == b"alice@example.com"


async def test_an_agent_sessions_own_upstream_session_carries_only_its_users_credential(
    bench: Bench, k8s: StandIn
) -> None:
    agent = await bench.agent("agent-1", "alice@example.com")
    upstream, agents = bench.upstream(k8s), bench.dispatcher.agents
    alice = bench.call("k8s", "get", NS, session=agent, principal=b"alice@example.com")
    session, bound = await agents.session(upstream, alice, _deadline(), b"Bearer alice-1")
    assert bound is not None and session.authorization == b"Bearer alice-1"
    mallory = bench.call("k8s", "get", NS, session=agent, principal=b"mallory@example.com")
    with pytest.raises(ForeignSession):
        await agents.session(upstream, mallory, _deadline(), b"Bearer mallory")
    assert session.authorization == b"Bearer alice-1"  # mallory's token never went on alice's session
    again, _ = await agents.session(upstream, alice, _deadline(), b"Bearer alice-2")  # her refreshed token
    assert again is session and session.authorization == b"Bearer alice-2"


async def test_a_servers_shared_sessions_are_one_per_user_when_it_takes_each_users_own_credential(
    bench: Bench, k8s: StandIn
) -> None:
    spec = MCPServerSpec(type="streamable-http", url=k8s.url, auth=Auth.model_validate({"forwardToken": True}))
    upstream = bench.upstream(k8s, spec=spec)
    deadline = _deadline()
    alice = await upstream.shared(b"alice@example.com", deadline, b"Bearer alice")
    bob = await upstream.shared(b"bob@example.com", deadline, b"Bearer bob")
    assert alice is not bob
    assert (alice.authorization, bob.authorization) == (b"Bearer alice", b"Bearer bob")
    plain = bench.upstream(k8s)  # no user credential: every caller shares one
    assert await plain.shared(b"alice@example.com", deadline) is await plain.shared(b"bob@example.com", deadline)


async def test_two_workers_opening_at_once_end_with_one_binding_and_the_other_session_is_closed(
    bench: Bench, other: Bench, k8s: StandIn
) -> None:
    agent = await bench.agent("agent-1")
    here, there = bench.upstream(k8s), other.upstream(k8s)
    opened, deleted = k8s.stats()["sessions"], k8s.stats()["requests"].get("DELETE 200", 0)
    outcomes = await asyncio.gather(
        _run(bench, here, bench.call("k8s", "get", NS, session=agent)),
        _run(other, there, other.call("k8s", "get", NS, session=agent)),
    )
    assert [kind for kind, _ in outcomes] == [ReplyKind.RESULT, ReplyKind.RESULT]
    binding = await _binding(bench, agent, "k8s")
    assert binding is not None
    assert here.bound[agent].session.session_id == there.bound[agent].session.session_id == binding.session_id
    await bench.dispatcher.background.wait(5)
    await other.dispatcher.background.wait(5)
    both = k8s.stats()["sessions"] - opened
    assert both in (1, 2)  # the second may have read the first's binding in time
    assert k8s.stats()["requests"].get("DELETE 200", 0) - deleted == both - 1


async def test_the_agents_log_level_is_set_on_its_new_upstream_session(bench: Bench, k8s: StandIn) -> None:
    agent = await bench.agent("agent-1", level="error")
    upstream = bench.upstream(k8s, capabilities={"tools": {}, "logging": {}})
    before = k8s.stats()["methods"].get("logging/setLevel", 0)
    await _run(bench, upstream, bench.call("k8s", "get", NS, session=agent))
    assert k8s.stats()["methods"].get("logging/setLevel", 0) == before + 1
    quiet = await bench.agent("agent-2")  # set no level: none is sent
    await _run(bench, upstream, bench.call("k8s", "get", NS, session=quiet))
    assert k8s.stats()["methods"].get("logging/setLevel", 0) == before + 1


async def test_a_per_request_agent_and_an_ended_session_use_the_shared_session(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    per_request = bench.call("k8s", "get", NS, session=b"")
    gone = bench.call("k8s", "get", NS, session=b"ended-long-ago")
    for call in (per_request, gone):
        assert (await _run(bench, upstream, call))[0] is ReplyKind.RESULT
    assert list(upstream.sessions) == [b""] and not upstream.bound
    assert await bench.valkey.keys(streams.upstream_sessions("*")) == []


INIT = (
    b'{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},'
    b'"serverInfo":{"name":"s"}}}'
)
TOOL = b'{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"sessionless"}]}}'


async def _sessionless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened: list[int]) -> None:
    """An upstream that names no session (as a stateless SDK server): every request stands alone."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            body = await reader.readexactly(length)
            message = orjson.loads(body) if body else {}
            if "id" not in message:
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                continue
            opened.append(message["method"] == "initialize")
            payload = (INIT if message["method"] == "initialize" else TOOL) % orjson.dumps(message["id"])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(payload), payload))  # fmt: skip
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def sessionless() -> AsyncIterator[tuple[StandIn, list[int]]]:
    opened: list[int] = []
    server = await asyncio.start_server(lambda r, w: _sessionless(r, w, opened), "127.0.0.1", 0)
    async with server:
        yield StandIn("plain", server.sockets[0].getsockname()[1]), opened


async def test_the_agents_of_a_sessionless_upstream_share_one_session_per_worker(
    bench: Bench, sessionless: tuple[StandIn, list[int]]
) -> None:
    server, requests = sessionless
    upstream = bench.upstream(server)
    agents = [await bench.agent(f"agent-{n}") for n in range(3)]
    for agent in agents * 2:
        assert (await _run(bench, upstream, bench.call("plain", "echo", {}, session=agent)))[0] is ReplyKind.RESULT
    assert upstream.stateful is False and not upstream.bound
    # the first agent's handshake taught the worker that the upstream is sessionless; then the shared one opened
    assert sum(requests) == 2 and len(requests) == 2 + 6
    assert await bench.valkey.keys(streams.upstream_sessions("*")) == []


async def test_with_upstream_sessions_shared_every_agent_uses_the_shared_session(bench: Bench, k8s: StandIn) -> None:
    bench.dispatcher.agents.per_agent = False  # MUSTER_WORKER_UPSTREAM_SESSIONS=shared
    upstream = bench.upstream(k8s)
    for n in range(3):
        agent = await bench.agent(f"agent-{n}")
        assert (await _run(bench, upstream, bench.call("k8s", "get", NS, session=agent)))[0] is ReplyKind.RESULT
    assert list(upstream.sessions) == [b""] and not upstream.bound
    assert await bench.valkey.keys(streams.upstream_sessions("*")) == []
