"""The GET stream of an agent session's upstream session, held by one worker: against server-everything (the
TypeScript SDK's reference server, which asks a new session for its roots and logs on that stream) and the
stand-in of mcp-kubernetes (which has no GET stream)."""

import asyncio
from collections.abc import Iterator
from typing import Any

import anyio
import orjson
import pytest

from muster.stack import Stack, free_port
from services.worker.upstream import Upstream
from shared import streams
from shared.messages import Answer, ReplyKind, SessionEvent, read_reply
from tests.conformance import tools
from tests.conftest import StandIn, entries
from tests.services.worker.conftest import OTHER_WORKER, REPLICA, WORKER, Bench

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOTS = b'"result":{"roots":[{"uri":"file:///agent/work","name":"work"}]}'


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    tools.ensure()
    stack = Stack(tmp_path_factory.mktemp("everything"))
    port = free_port()
    command = [str(tools.NODE), "--require", str(tools.LOOPBACK), str(tools.EVERYTHING), "streamableHttp"]
    stack.start("server-everything", command, {"PORT": str(port)}, quiet=True)
    try:
        stack.wait_tcp(port, "server-everything")
        yield StandIn("everything", port)
    finally:
        stack.stop()


async def _call(bench: Bench, upstream: Upstream, agent: bytes, tool: str, arguments: dict[str, Any]) -> str:
    call = bench.call(upstream.name, tool, arguments, session=agent)
    deadline = asyncio.get_running_loop().time() + 10
    kind, body = await bench.dispatcher.executor.execute(upstream, call, deadline)
    assert kind is ReplyKind.RESULT, body
    text: str = orjson.loads(body)["content"][0]["text"]
    return text


async def _events(bench: Bench, count: int = 1, seconds: float = 5) -> list[SessionEvent]:
    with anyio.fail_after(seconds):
        while True:
            found = [read_reply(f) for _, f in await entries(bench.valkey, streams.replies(REPLICA.decode()))]
            events = [e for e in found if isinstance(e, SessionEvent)]
            if len(events) >= count:
                return events
            await anyio.sleep(0.02)


async def test_one_worker_holds_the_stream_and_the_upstreams_roots_request_reaches_the_agent_and_back(
    bench: Bench, other: Bench, everything: StandIn
) -> None:
    agent = await bench.agent("agent-1", stream=REPLICA, capabilities='{"roots":{}}')
    here, there = bench.upstream(everything), other.upstream(everything)
    await _call(bench, here, agent, "echo", {"message": "hi"})
    lease = streams.listener("everything", "agent-1")
    assert await bench.valkey.get(lease) == WORKER.encode()
    # server-everything asks a new session's client for its roots, on the GET stream, 350 ms after initialize
    [asked] = await _events(bench)
    assert asked.ref and orjson.loads(asked.body)["method"] == "roots/list"
    await bench.dispatcher.relays.answer(Answer(asked.ref, agent, ROOTS))
    # the other worker speaks in the same session (which now knows the roots) and leaves the stream to the holder
    listed = await _call(other, there, agent, "get-roots-list", {})
    assert "file:///agent/work" in listed
    assert not other.dispatcher.listeners.held and await bench.valkey.get(lease) == WORKER.encode()
    # the holder stops: the lease is free, and the other worker takes the stream when it next uses the session
    await bench.dispatcher.listeners.close(5)
    assert await bench.valkey.get(lease) is None
    there.bound[agent].lease_at = 0.0  # rather than waiting out the lease period
    await _call(other, there, agent, "echo", {"message": "again"})
    with anyio.fail_after(5):
        while await bench.valkey.get(lease) != OTHER_WORKER.encode():
            await anyio.sleep(0.02)


async def test_a_log_sent_outside_any_call_reaches_the_agents_get_stream(bench: Bench, everything: StandIn) -> None:
    agent = await bench.agent("agent-1", stream=REPLICA)  # no roots capability: that request is refused upstream
    upstream = bench.upstream(everything)
    started = await _call(bench, upstream, agent, "toggle-simulated-logging", {})
    assert started.startswith("Started simulated")
    try:
        events = await _events(bench)  # one message at once, then every 5 s
        message = orjson.loads(events[0].body)
        assert message["method"] == "notifications/message" and not events[0].ref
        assert "SessionId" in message["params"]["data"]  # server-everything names the session it logs for
    finally:
        await _call(bench, upstream, agent, "toggle-simulated-logging", {})


async def test_a_request_of_the_upstream_during_a_call_joins_the_calls_stream(
    bench: Bench, everything: StandIn
) -> None:
    agent = await bench.agent("agent-1", capabilities='{"roots":{}}')  # no GET stream of its own
    upstream = bench.upstream(everything)
    await _call(bench, upstream, agent, "echo", {"message": "hi"})  # the roots request on open: answered with an error
    listing = asyncio.ensure_future(_call(bench, upstream, agent, "get-roots-list", {}))  # asks again, mid-call
    with anyio.fail_after(5):
        while not (requests := [r for r in await bench.replies(0) if r.kind is ReplyKind.REQUEST]):
            await anyio.sleep(0.02)
    assert orjson.loads(requests[0].body)["method"] == "roots/list"
    await bench.dispatcher.relays.answer(Answer(requests[0].ref, agent, ROOTS))
    with anyio.fail_after(10):
        assert "file:///agent/work" in await listing


async def test_an_upstream_without_a_get_stream_is_not_asked_again_for_a_while(bench: Bench, k8s: StandIn) -> None:
    upstream = bench.upstream(k8s)
    refused = k8s.stats()["requests"].get("GET 404", 0)
    for n in range(3):
        agent = await bench.agent(f"agent-{n}")
        call = bench.call("k8s", "get", {"resourceType": "namespaces", "name": "default"}, session=agent)
        kind, _ = await bench.dispatcher.executor.execute(upstream, call, asyncio.get_running_loop().time() + 10)
        assert kind is ReplyKind.RESULT
    assert k8s.stats()["requests"].get("GET 404", 0) == refused + 1  # counted as "GET 404"; it answers 405
    assert upstream.streams_after > asyncio.get_running_loop().time() and not bench.dispatcher.listeners.held
