"""Calls in flight from one replica, against a real valkey-server: enqueued within their bounds, answered from
the replica's reply stream in order, and answered by the sweeper when no outcome came in time."""

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis

from muster.stack import Stack, free_port
from services.ingress.calls import SWEEP_GRACE, Calls
from services.ingress.get_streams import GetStreams
from shared import errors, streams
from shared.messages import Call, CallReply, ReplyKind, SessionEvent
from shared.valkey import Outbox, connect
from tests.conftest import entries

pytestmark = pytest.mark.anyio

REPLICA = "replica-1"


@pytest.fixture
async def outbox(valkey: Redis, valkey_url: str) -> AsyncIterator[Outbox]:
    out = Outbox(valkey_url)
    try:
        yield out
    finally:
        out.close()


def _calls(valkey: Redis, outbox: Outbox, get_streams: GetStreams | None = None, **bounds: Any) -> Calls:
    limits = {"queue_limit": 100, "max_pending": 100, "retry_after": 1.5, "fair_share": 8, **bounds}
    return Calls(valkey, outbox, REPLICA, get_streams or GetStreams(), **limits)


def _call(calls: Calls, server: bytes = b"k8s", deadline: float = 30) -> Call:
    call_id = calls.new_call_id()
    return Call(
        call_id=call_id,
        replica=REPLICA.encode(),
        session=b"s",
        principal=b"anonymous",
        server=server,
        method=b"tools/call",
        params=b'{"name":"get"}',
        deadline_ms=int((time.time() + deadline) * 1000),
        safe=True,
        key=b"s " + call_id,
    )


async def test_a_call_is_enqueued_on_its_server_s_stream_and_counted(valkey: Redis, outbox: Outbox) -> None:
    calls = _calls(valkey, outbox)
    call = _call(calls)
    await calls.submit(call)
    [(_, fields)] = await entries(valkey, streams.calls("k8s"))
    assert Call.from_fields(fields) == call
    assert await valkey.get(streams.depth("k8s")) == b"1" and call.call_id in calls.pending


async def test_a_full_queue_or_replica_is_answered_at_once_with_a_retry_hint(valkey: Redis, outbox: Outbox) -> None:
    calls = _calls(valkey, outbox, queue_limit=1, max_pending=2)
    await calls.submit(_call(calls))
    with pytest.raises(errors.QueueFull, match="the queue of k8s is full") as full:
        await calls.submit(_call(calls))
    assert full.value.retry_after == 1.5
    await calls.submit(_call(calls, server=b"other"))  # another server's queue has room
    with pytest.raises(errors.QueueFull, match="too many calls in flight"):
        await calls.submit(_call(calls, server=b"third"))
    assert len(calls.pending) == 2  # the refused calls wait for nothing


async def test_replies_reach_their_call_in_order_and_session_events_their_stream(valkey: Redis, outbox: Outbox) -> None:
    get_streams = GetStreams()
    queue = get_streams.open("session-a")
    assert queue is not None
    calls = _calls(valkey, outbox, get_streams)
    first, second = _call(calls), _call(calls)
    waiting = {c.call_id: await calls.submit(c) for c in (first, second)}
    reader = asyncio.create_task(calls.read_replies())
    try:
        replica = REPLICA.encode()
        outbox.reply(replica, CallReply(second.call_id, ReplyKind.NOTIFICATION, b'{"n":1}'))
        outbox.reply(replica, SessionEvent(b"session-a", b'{"updated":true}'))
        outbox.reply(replica, CallReply(first.call_id, ReplyKind.RESULT, b'{"first":1}'))
        outbox.reply(replica, CallReply(second.call_id, ReplyKind.RESULT, b'{"second":1}'))
        with anyio.fail_after(5):
            assert (await waiting[first.call_id].next()).body == b'{"first":1}'
            notified, final = await waiting[second.call_id].next(), await waiting[second.call_id].next()
            assert await queue.get() == b'{"updated":true}'
        assert (notified.kind, final.kind, final.body) == (ReplyKind.NOTIFICATION, ReplyKind.RESULT, b'{"second":1}')
        assert calls.pending == {}  # a final reply ends the wait
    finally:
        reader.cancel()


async def test_a_call_without_an_outcome_past_its_deadline_is_answered_in_the_worker_s_place(
    valkey: Redis, outbox: Outbox
) -> None:
    calls = _calls(valkey, outbox)
    call = _call(calls, deadline=0)
    pending = await calls.submit(call)
    calls.expire(time.time())  # the deadline passed, the grace not yet
    assert call.call_id in calls.pending
    calls.expire(time.time() + SWEEP_GRACE + 0.1)
    with anyio.fail_after(1):
        reply = await pending.next()
    assert reply.final and orjson.loads(reply.body)["code"] == errors.DEADLINE_EXCEEDED
    assert calls.pending == {}


async def test_servers_that_hang_cannot_take_the_replica_s_room_from_another(valkey: Redis, outbox: Outbox) -> None:
    calls = _calls(valkey, outbox, max_pending=10, max_pending_per_server=4)
    for server in (b"hung-1", b"hung-2"):
        for _ in range(4):
            await calls.submit(_call(calls, server=server))
        with pytest.raises(errors.QueueFull, match=f"too many calls in flight to {server.decode()}"):
            await calls.submit(_call(calls, server=server))
    healthy = _call(calls, server=b"healthy")
    await calls.submit(healthy)  # 8 of the replica's 10 are taken, but not by this server
    calls.done(healthy.call_id)
    assert calls.per_server == {b"hung-1": 4, b"hung-2": 4}


async def test_a_call_valkey_would_queue_after_the_replica_gave_up_is_not_queued(valkey: Redis, outbox: Outbox) -> None:
    calls = _calls(valkey, outbox, enqueue_seconds=0.5)
    calls.valkey_clock = 60.0  # as if Valkey's clock ran a minute ahead of this host's: time enough
    await calls.submit(_call(calls))
    calls.valkey_clock = -60.0  # as if Valkey ran the script a minute after it was sent
    with pytest.raises(ConnectionError, match="stopped waiting"):
        await calls.submit(_call(calls))
    assert await valkey.xlen(streams.calls("k8s")) == 1 and len(calls.pending) == 1


async def test_the_replica_beats_and_measures_valkey_s_clock_and_says_when_it_stopped(
    valkey: Redis, outbox: Outbox
) -> None:
    calls = _calls(valkey, outbox)
    beating = asyncio.create_task(calls.beat(0.05))
    try:
        with anyio.fail_after(5):
            while int(await valkey.get(streams.replica_beat(REPLICA)) or 0) < 3:
                await anyio.sleep(0.02)
    finally:
        beating.cancel()
    assert calls.valkey_clock is not None and abs(calls.valkey_clock) < 1  # one machine, one clock
    assert await valkey.smembers(streams.REPLICAS) == {REPLICA.encode()}
    outbox.reply(REPLICA.encode(), CallReply(b"1", ReplyKind.RESULT, b"{}"))
    await calls.close()
    assert await valkey.exists(streams.replies(REPLICA)) == 0
    assert await valkey.get(streams.replica_beat(REPLICA)) == streams.BEAT_STOPPED  # workers need not wait


async def test_a_frozen_valkey_fails_calls_fast_and_says_when_one_not_safe_to_repeat_may_still_run(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path, log=lambda _: None)
    try:
        url = stack.valkey(free_port())
        pid = stack.children[-1].process.pid  # type: ignore[union-attr]
        outbox = Outbox(url, timeout=0.3)
        client = connect(url)
        calls = _calls(client, outbox)
        await calls.submit(_call(calls))  # connected
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            safe, unsafe = _call(calls), replace(_call(calls), safe=False)
            outcomes = await asyncio.gather(calls.submit(safe), calls.submit(unsafe), return_exceptions=True)
            assert time.monotonic() - started < 1.0
        finally:
            os.kill(pid, signal.SIGCONT)
        assert isinstance(outcomes[0], ConnectionError)  # -32006: retry; harmless if it runs after all
        assert isinstance(outcomes[1], errors.OutcomeUnknown)  # it may run when valkey wakes up
        assert len(calls.pending) == 1
        outbox.close()
        await client.aclose()
    finally:
        stack.stop()


async def test_an_upstream_request_that_cannot_be_delivered_is_answered_at_once_through_its_workers_inbox(
    valkey: Redis, outbox: Outbox
) -> None:
    get_streams = GetStreams()
    queue = get_streams.open("session-a")
    assert queue is not None
    calls = _calls(valkey, outbox, get_streams)
    reader = asyncio.create_task(calls.read_replies())
    request = b'{"jsonrpc":"2.0","id":"w-1/%d","method":"roots/list","params":{}}'
    try:
        replica = REPLICA.encode()
        outbox.reply(replica, SessionEvent(b"session-a", request % 1, b"w-1/1"))  # delivered: the client answers
        outbox.reply(replica, SessionEvent(b"session-b", request % 2, b"w-1/2"))  # no GET stream open here
        outbox.reply(replica, CallReply(b"999", ReplyKind.REQUEST, b'{"method":"roots/list"}', b"w-1/3"))  # ended
        with anyio.fail_after(5):
            assert await queue.get() == request % 1
            while len(answers := await entries(valkey, streams.inbox("w-1"))) < 2:
                await anyio.sleep(0.01)
        refs = {fields[b"ref"]: fields for _, fields in answers}
        assert sorted(refs) == [b"w-1/2", b"w-1/3"]
        assert refs[b"w-1/2"][b"session"] == b"session-b" and refs[b"w-1/3"][b"session"] == b""
        for fields in refs.values():
            error = orjson.loads(b"{" + fields[b"body"] + b"}")["error"]
            assert error["code"] == errors.INTERNAL_ERROR and "cannot reach the client" in error["message"]
    finally:
        reader.cancel()
