"""What an upstream asks its caller during a call, relayed through the reply stream and answered through the
worker's inbox, against the conformance fixture server (which asks for the client's roots) and real Valkey."""

import asyncio
from typing import Any

import anyio
import orjson
import pytest

from services.worker.execute import Executor
from services.worker.relays import Relays
from shared.lifecycle import Background
from shared.messages import Answer, ReplyKind
from tests.conftest import StandIn
from tests.services.worker.conftest import WORKER, Bench

pytestmark = pytest.mark.anyio

ROOTS = b'"result":{"roots":[{"uri":"file:///work","name":"work"}]}'


async def _asked(bench: Bench) -> tuple[bytes, dict[str, object]]:
    """The request the upstream sent, as the caller sees it: its ref, and the request without an id."""
    with anyio.fail_after(10):
        while True:
            requests = [r for r in await bench.replies(0) if r.kind is ReplyKind.REQUEST]
            if requests:
                request: dict[str, object] = orjson.loads(requests[0].body)
                return requests[0].ref, request
            await anyio.sleep(0.02)


async def test_a_request_during_a_call_reaches_the_caller_and_its_answer_the_upstream(
    bench: Bench, upstreams: dict[str, StandIn]
) -> None:
    relays = Relays(bench.outbox, WORKER)
    executor = Executor(relays, Background(), bench.dispatcher.agents)
    call = bench.call("fixture", "test_roots", {})
    deadline = asyncio.get_running_loop().time() + 10
    running = asyncio.ensure_future(executor.execute(bench.upstream(upstreams["fixture"]), call, deadline))
    ref, request = await _asked(bench)
    assert ref.startswith(WORKER.encode() + b"/") and request["method"] == "roots/list"
    await relays.answer(Answer(ref, b"another-session", ROOTS))  # only the session that was asked may answer
    assert ref in relays.waiting
    await relays.answer(Answer(ref, call.session, ROOTS))
    with anyio.fail_after(10):
        kind, body = await running
    assert kind is ReplyKind.RESULT
    assert orjson.loads(orjson.loads(body)["content"][0]["text"]) == ["file:///work"]
    relays.drop(call.key)  # the call is finished: nothing of it stays
    assert relays.waiting == {} and relays.by_call == {}


async def test_a_ping_during_a_call_is_answered_by_the_worker_not_relayed(
    bench: Bench, recorder: tuple[StandIn, list[dict[str, Any]]]
) -> None:
    server, received = recorder
    session = bench.upstream(server).new_session(b"anonymous")
    session.adopt(b"s-1", b"2025-11-25")
    ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
    bench.dispatcher.relays.on_message(bench.call("raw", "slow", {}), session)(ping, orjson.dumps(ping))
    with anyio.fail_after(5):
        while not received:
            await anyio.sleep(0.01)
    assert received == [{"jsonrpc": "2.0", "id": 9, "result": {}}]
    assert await bench.replies(0) == [] and bench.dispatcher.relays.waiting == {}
