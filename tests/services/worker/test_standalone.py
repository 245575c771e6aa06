"""Where what an upstream sends on an agent session's GET stream goes: to a running call of that session, to the
agent's GET stream, or (reaching nobody) back to the upstream as an error at once. The upstream here is a raw
server that records every message it is sent; Valkey is real."""

import asyncio
from typing import Any

import anyio
import orjson
import pytest

from services.worker.upstream import Bound, Upstream
from shared import errors, streams
from shared.messages import Answer, CallReply, ReplyKind, SessionEvent, read_reply
from tests.conftest import StandIn, entries
from tests.services.worker.conftest import REPLICA, WORKER, Bench

pytestmark = pytest.mark.anyio

ROOTS = {"jsonrpc": "2.0", "id": 7, "method": "roots/list", "params": {}}
LOG = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "outside"}}


async def _bound(bench: Bench, server: StandIn, agent: bytes) -> tuple[Upstream, Bound]:
    upstream = bench.upstream(server)
    bound = Bound(agent, b"anonymous", upstream.new_session(b"anonymous"))
    bound.session.adopt(b"upstream-session-1", b"2025-11-25")
    return upstream, bound


async def _deliver(bench: Bench, upstream: Upstream, bound: Bound, message: dict[str, Any]) -> None:
    await bench.dispatcher.listeners.standalone.deliver(upstream, bound, message, orjson.dumps(message))


async def _answered(received: list[dict[str, Any]], count: int = 1) -> list[dict[str, Any]]:
    with anyio.fail_after(5):
        while len(received) < count:
            await anyio.sleep(0.01)
    return received


async def _replies(bench: Bench, count: int = 1) -> list[Any]:
    with anyio.fail_after(5):
        while True:
            await bench.outbox.drain()
            found = [read_reply(f) for _, f in await entries(bench.valkey, streams.replies(REPLICA.decode()))]
            if len(found) >= count:
                return found
            await anyio.sleep(0.01)


async def test_a_request_reaches_the_agents_get_stream_and_its_answer_the_upstream(
    bench: Bench, recorder: tuple[StandIn, list[dict[str, Any]]]
) -> None:
    server, received = recorder
    agent = await bench.agent("agent-1", stream=REPLICA, capabilities='{"roots":{}}')
    upstream, bound = await _bound(bench, server, agent)
    await _deliver(bench, upstream, bound, ROOTS)
    [event] = await _replies(bench)
    assert isinstance(event, SessionEvent) and event.session == agent and event.ref.startswith(WORKER.encode())
    request = orjson.loads(event.body)
    assert request == {"jsonrpc": "2.0", "id": event.ref.decode(), "method": "roots/list", "params": {}}
    roots = b'"result":{"roots":[{"uri":"file:///agent"}]}'
    await bench.dispatcher.relays.answer(Answer(event.ref, b"another-agent", roots))  # not its to answer
    await bench.dispatcher.relays.answer(Answer(event.ref, agent, roots))
    assert await _answered(received) == [{"jsonrpc": "2.0", "id": 7, "result": {"roots": [{"uri": "file:///agent"}]}}]


async def test_a_request_during_a_call_of_the_agent_joins_that_calls_stream(
    bench: Bench, recorder: tuple[StandIn, list[dict[str, Any]]]
) -> None:
    server, received = recorder
    agent = await bench.agent("agent-1", stream=REPLICA)  # a GET stream too: the call's stream wins
    upstream, bound = await _bound(bench, server, agent)
    call = bench.call("raw", "slow", {}, session=agent, call_id=b"41")
    bench.dispatcher.bindings.running("raw", bound, call, 0.0)
    await _deliver(bench, upstream, bound, ROOTS)
    [reply] = await _replies(bench)
    assert isinstance(reply, CallReply) and reply.call_id == b"41" and reply.kind is ReplyKind.REQUEST
    assert orjson.loads(reply.body) == {"method": "roots/list", "params": {}}
    bench.dispatcher.bindings.finished(bound, call)
    await bench.outbox.drain()
    assert await bench.dispatcher.bindings.running_calls("raw", agent) == []
    # The ingress found the call ended: it answers in the client's place, at once.
    await bench.dispatcher.relays.answer(Answer(reply.ref, b"", b'"error":{"code":-32603,"message":"gone"}'))
    assert (await _answered(received))[0]["error"]["message"] == "gone"


@pytest.mark.parametrize(
    ("stream", "capabilities", "code", "why"),
    [
        (None, '{"roots":{}}', errors.INTERNAL_ERROR, "no call running here and no GET stream open"),
        (REPLICA, "{}", errors.METHOD_NOT_FOUND, "did not declare the roots capability"),
    ],
)
async def test_a_request_that_cannot_reach_its_agent_is_answered_with_an_error_at_once(
    bench: Bench,
    recorder: tuple[StandIn, list[dict[str, Any]]],
    stream: bytes | None,
    capabilities: str,
    code: int,
    why: str,
) -> None:
    server, received = recorder
    agent = await bench.agent("agent-1", stream=stream, capabilities=capabilities)
    upstream, bound = await _bound(bench, server, agent)
    await _deliver(bench, upstream, bound, ROOTS)
    [answer] = await _answered(received)
    assert answer["id"] == 7 and answer["error"]["code"] == code and why in answer["error"]["message"]
    assert bench.dispatcher.relays.waiting == {}


async def test_a_request_waits_a_moment_for_the_get_stream_of_an_agent_that_just_initialized(
    bench: Bench, recorder: tuple[StandIn, list[dict[str, Any]]]
) -> None:
    server, _ = recorder
    agent = await bench.agent("agent-1", capabilities='{"roots":{}}')
    upstream, bound = await _bound(bench, server, agent)
    delivering = asyncio.ensure_future(_deliver(bench, upstream, bound, ROOTS))
    await asyncio.sleep(0.3)
    assert not delivering.done()
    await bench.valkey.hset(streams.session("agent-1"), "stream", REPLICA)  # its client opened the GET stream
    with anyio.fail_after(5):
        await delivering
    [event] = await _replies(bench)
    assert isinstance(event, SessionEvent) and orjson.loads(event.body)["method"] == "roots/list"


async def test_a_ping_is_answered_by_the_worker(bench: Bench, recorder: tuple[StandIn, list[dict[str, Any]]]) -> None:
    server, received = recorder
    upstream, bound = await _bound(bench, server, await bench.agent("agent-1"))
    await _deliver(bench, upstream, bound, {"jsonrpc": "2.0", "id": "p", "method": "ping"})
    assert await _answered(received) == [{"jsonrpc": "2.0", "id": "p", "result": {}}]


async def test_an_unanswered_request_gets_an_error_after_the_bound(
    bench: Bench, recorder: tuple[StandIn, list[dict[str, Any]]]
) -> None:
    server, received = recorder
    bench.dispatcher.relays.answer_seconds = 0.2
    upstream, bound = await _bound(bench, server, await bench.agent("agent-1", stream=REPLICA))
    await _deliver(bench, upstream, bound, {**ROOTS, "method": "ping-me-not"})
    [answer] = await _answered(received)
    assert answer["id"] == 7 and "did not answer within 0.2 s" in answer["error"]["message"]


async def test_a_notification_goes_to_the_agents_get_stream_and_list_changed_to_nobody(
    bench: Bench, recorder: tuple[StandIn, list[dict[str, Any]]]
) -> None:
    server, _ = recorder
    agent = await bench.agent("agent-1", stream=REPLICA)
    upstream, bound = await _bound(bench, server, agent)
    await _deliver(bench, upstream, bound, {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    await _deliver(bench, upstream, bound, LOG)
    [event] = await _replies(bench)
    assert isinstance(event, SessionEvent) and not event.ref and orjson.loads(event.body) == LOG


async def test_without_a_get_stream_a_notification_joins_a_running_calls_stream(
    bench: Bench, recorder: tuple[StandIn, list[dict[str, Any]]]
) -> None:
    server, _ = recorder
    agent = await bench.agent("agent-1")
    upstream, bound = await _bound(bench, server, agent)
    bench.dispatcher.bindings.running("raw", bound, bench.call("raw", "slow", {}, session=agent, call_id=b"9"), 0.0)
    await _deliver(bench, upstream, bound, LOG)
    [reply] = await _replies(bench)
    assert isinstance(reply, CallReply) and reply.call_id == b"9" and reply.kind is ReplyKind.NOTIFICATION
