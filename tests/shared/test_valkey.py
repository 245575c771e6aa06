"""The Valkey access of every service, against a real valkey-server."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from hiredis import ReplyError
from redis.asyncio import Redis

from muster.stack import free_port
from shared import streams
from shared.messages import CallReply, CancelCall, ReplyKind, SessionEvent, decode_control, read_reply
from shared.resp import ConnectionClosed
from shared.valkey import COMPARE_AND_DELETE, AtWrite, Outbox, connect, ensure_group, xadd
from tests.conftest import entries

pytestmark = pytest.mark.anyio


@pytest.fixture
async def outbox(valkey: Redis, valkey_url: str) -> AsyncIterator[Outbox]:
    out = Outbox(valkey_url, name="muster-test-out")
    try:
        yield out
    finally:
        out.close()


async def test_commands_of_one_turn_go_out_together_and_each_caller_gets_its_own_reply(outbox: Outbox) -> None:
    first, second = outbox.send(b"SET", b"a", b"1"), outbox.send(b"INCR", b"n")
    outbox.post(b"INCR", b"n")
    third = outbox.send(b"GET", b"n")
    with anyio.fail_after(5):
        assert [await first, await second, await third] == [b"OK", 1, b"2"]


async def test_a_refused_command_fails_only_its_own_caller(outbox: Outbox) -> None:
    good, bad = outbox.send(b"SET", b"k", b"v"), outbox.send(b"INCR", b"k")
    with anyio.fail_after(5):
        assert await good == b"OK"
        with pytest.raises(ReplyError, match="not an integer"):
            await bad


async def test_a_script_is_loaded_again_when_valkey_forgot_it(outbox: Outbox, valkey: Redis) -> None:
    with anyio.fail_after(5):
        assert await outbox.script(COMPARE_AND_DELETE, ("lease",), ("me",)) == 0
        await valkey.script_flush()
        await valkey.set("lease", "me")
        assert await outbox.script(COMPARE_AND_DELETE, ("lease",), ("me",)) == 1
        assert await valkey.exists("lease") == 0


async def test_a_script_valkey_forgot_runs_for_every_one_of_many_concurrent_callers(
    outbox: Outbox, valkey: Redis
) -> None:
    # Valkey restarted and forgot its scripts while 50 callers run one at once: each gets its answer.
    with anyio.fail_after(5):
        assert await outbox.script(COMPARE_AND_DELETE, ("lease",), ("me",)) == 0
    await valkey.script_flush()
    await valkey.mset({f"lease-{n}": "me" for n in range(50)})
    with anyio.fail_after(5):
        done = await asyncio.gather(*(outbox.script(COMPARE_AND_DELETE, (f"lease-{n}",), ("me",)) for n in range(50)))
    assert done == [1] * 50


async def test_compare_and_delete_lets_go_only_of_what_the_holder_still_holds(outbox: Outbox, valkey: Redis) -> None:
    await valkey.set("lease", "someone-else")
    await valkey.hset("session", mapping={"stream": "replica-2", "protocol": "2025-11-25"})
    with anyio.fail_after(5):
        assert await outbox.script(COMPARE_AND_DELETE, ("lease",), ("me",)) == 0
        assert await outbox.script(COMPARE_AND_DELETE, ("session",), ("replica-1", "stream")) == 0
        assert await outbox.script(COMPARE_AND_DELETE, ("session",), ("replica-2", "stream")) == 1
    assert await valkey.get("lease") == b"someone-else"
    assert await valkey.hgetall("session") == {b"protocol": b"2025-11-25"}


async def test_the_workers_group_reads_calls_that_came_before_it_and_is_made_once(valkey: Redis) -> None:
    queue = streams.queue("k8s")
    await valkey.xadd(queue.stream, {b"n": b"early"})
    await ensure_group(valkey, "k8s")
    await ensure_group(valkey, "k8s")  # BUSYGROUP: already there, nothing to do
    read: Any = await valkey.xreadgroup(streams.GROUP_WORKERS, "w1", {queue.stream: ">"})
    assert read[0][1][0][1] == {b"n": b"early"}


async def test_appends_are_bounded_by_the_length_streams_py_gives(outbox: Outbox, valkey: Redis) -> None:
    assert xadd("s", 5, [b"k", b"v"]) == (b"XADD", "s", b"MAXLEN", b"~", 5, b"*", b"k", b"v")
    for n in range(1000):
        outbox.append(b"bounded", 10, [b"n", n])
    with anyio.fail_after(5):
        await outbox.drain()
    assert await valkey.xlen("bounded") <= 10 + 100  # trimmed approximately: whole nodes of 100 entries


async def test_replies_reach_the_replica_s_stream_which_expires_when_nobody_writes(
    outbox: Outbox, valkey: Redis
) -> None:
    outbox.reply(b"replica-1", CallReply(b"7", ReplyKind.RESULT, b"{}"))
    outbox.reply(b"replica-1", SessionEvent(b"session", b"{}"))
    with anyio.fail_after(5):
        await outbox.drain()
    stream = streams.replies("replica-1")
    assert [read_reply(fields) for _, fields in await entries(valkey, stream)] == [
        CallReply(b"7", ReplyKind.RESULT, b"{}"),
        SessionEvent(b"session", b"{}"),
    ]
    assert 0 < await valkey.ttl(stream) <= streams.REPLIES_TTL


async def test_control_messages_are_published_on_a_bounded_stream(outbox: Outbox, valkey: Redis) -> None:
    outbox.publish(streams.CONTROL, CancelCall(key="s 1"))
    with anyio.fail_after(5):
        await outbox.drain()
    [(_, fields)] = await entries(valkey, streams.CONTROL)
    assert decode_control(fields) == CancelCall(key="s 1")


async def test_a_valkey_that_cannot_be_reached_fails_every_waiting_caller() -> None:
    out = Outbox(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        first, second = out.send(b"PING"), out.send(b"GET", b"k")
        out.post(b"INCR", b"n")
        with anyio.fail_after(10):
            for waiting in (first, second):
                with pytest.raises(ConnectionClosed, match="cannot reach valkey"):
                    await waiting
    finally:
        out.close()


async def test_an_argument_at_write_is_taken_when_the_command_is_written_not_when_it_is_queued(
    outbox: Outbox,
) -> None:
    # The ENQUEUE's deadline: a loop busy between queuing and writing (a burst) must not have aged it.
    value = [b"queued"]
    running = asyncio.ensure_future(outbox.script(b"return ARGV[1]", (), (AtWrite(lambda: value[0]),)))
    await asyncio.sleep(0)  # queued, not yet written
    value[0] = b"written"
    with anyio.fail_after(5):
        assert await running == b"written"


async def test_a_redis_py_command_cancelled_at_any_step_is_cancelled(valkey_url: str) -> None:
    # Python 3.11's asyncio.wait_for, which redis-py bounds a write with, returns the result of a write that finished
    # as its task was cancelled: the cancellation was lost, and a discovery loop cancelled so never stopped.
    client = connect(valkey_url, name="muster-test-cancel")
    lost: list[int] = []
    try:
        await client.ping()
        for steps in range(40):
            task = asyncio.ensure_future(client.set("cancelled", b"1"))
            for _ in range(steps):
                await asyncio.sleep(0)
            if not task.cancel():
                continue  # it had finished: there was nothing to lose
            try:
                await task
                lost.append(steps)
            except asyncio.CancelledError:
                pass
    finally:
        await client.aclose()
    assert lost == [], f"the cancellation was lost when it came after {lost} steps"
