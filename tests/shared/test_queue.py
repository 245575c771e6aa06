"""A server's queue, in and out, against a real valkey-server: the bound, the fair shares and their overflow, a
FINISH that moves its counters once, and an ENQUEUE that Valkey ran too late."""

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from shared import streams
from shared.messages import ANONYMOUS, Call
from shared.queue import Late, enqueue, finish, principal_of
from shared.valkey import Outbox, ensure_group
from tests.conftest import entries

pytestmark = pytest.mark.anyio

KEYS = streams.queue("k8s")
_ids = iter(range(1, 1_000_000))


@pytest.fixture
async def outbox(valkey: Redis, valkey_url: str) -> AsyncIterator[Outbox]:
    out = Outbox(valkey_url, name="muster-test-out")
    await ensure_group(valkey, "k8s")
    try:
        yield out
    finally:
        out.close()


def _call(session: bytes = b"s1", principal: bytes = ANONYMOUS) -> Call:
    call_id = b"%d" % next(_ids)
    return Call(
        call_id=call_id,
        replica=b"r",
        session=session,
        principal=principal,
        server=b"k8s",
        method=b"tools/call",
        params=b'{"name":"get"}',
        deadline_ms=int((time.time() + 30) * 1000),
        safe=True,
        key=session + b" " + call_id,
    )


async def _read(valkey: Redis, count: int = 100) -> list[tuple[bytes, Call]]:
    """What a worker reads from the main stream next."""
    read: Any = await valkey.xreadgroup(streams.GROUP_WORKERS, "w1", {KEYS.stream: ">"}, count=count)
    return [(entry_id, Call.from_fields(fields)) for entry_id, fields in (read[0][1] if read else [])]


def test_the_principal_is_who_signed_in_else_the_session_else_all_anonymous_per_request_clients() -> None:
    assert principal_of(_call(session=b"s1", principal=b"alice@example.com")) == b"alice@example.com"
    assert principal_of(_call(session=b"s1")) == b"s1"
    assert principal_of(_call(session=b"")) == ANONYMOUS


async def test_enqueue_refuses_past_the_bound_and_leaves_the_count_as_it_was(outbox: Outbox, valkey: Redis) -> None:
    with anyio.fail_after(5):
        for n in range(2):
            assert await enqueue(outbox, _call(session=b"s%d" % n), bound=2, fair_share=10) is not None
        assert await enqueue(outbox, _call(session=b"s3"), bound=2, fair_share=10) is None
    assert await valkey.get(KEYS.depth) == b"2" and await valkey.xlen(KEYS.stream) == 2
    assert await valkey.hgetall(KEYS.shares) == {b"s0": b"1", b"s1": b"1"}


async def test_a_principal_beyond_its_share_waits_in_its_overflow_and_another_goes_first(
    outbox: Outbox, valkey: Redis
) -> None:
    flood = [_call(session=b"flood") for _ in range(5)]
    quiet = _call(session=b"quiet")
    with anyio.fail_after(5):
        for call in flood:
            await enqueue(outbox, call, bound=100, fair_share=2)
        await enqueue(outbox, quiet, bound=100, fair_share=2)
    assert [c.call_id for _, c in await _read(valkey)] == [flood[0].call_id, flood[1].call_id, quiet.call_id]
    assert await valkey.xlen(KEYS.overflow(b"flood")) == 3
    assert await valkey.get(KEYS.depth) == b"6"  # the bound counts the overflow too


async def test_each_finished_call_promotes_its_principal_s_next_one_in_order(outbox: Outbox, valkey: Redis) -> None:
    flood = [_call(session=b"flood") for _ in range(4)]
    with anyio.fail_after(5):
        for call in flood:
            await enqueue(outbox, call, bound=100, fair_share=2)
    read = await _read(valkey)
    promoted: list[bytes] = []
    with anyio.fail_after(5):
        while read:
            entry_id, call = read.pop(0)
            assert await finish(outbox, KEYS, entry_id, call) == (2 if len(promoted) < 2 else 1)
            for new_id, new in await _read(valkey):
                assert new_id > entry_id  # a promoted call gets a new entry id, and keeps its fields
                read.append((new_id, new))
                promoted.append(new.call_id)
    assert promoted == [flood[2].call_id, flood[3].call_id]
    assert await valkey.get(KEYS.depth) == b"0"
    assert await valkey.exists(KEYS.shares, KEYS.overflow(b"flood")) == 0  # nothing left behind
    assert await entries(valkey, KEYS.stream) == []


async def test_finish_moves_its_counters_once_however_often_it_runs(outbox: Outbox, valkey: Redis) -> None:
    call = _call()
    with anyio.fail_after(5):
        await enqueue(outbox, call, bound=100, fair_share=2)
        await enqueue(outbox, _call(), bound=100, fair_share=2)
        [(entry_id, _), _] = await _read(valkey)
        await valkey.set(KEYS.started(entry_id), b"w1")
        assert [await finish(outbox, KEYS, entry_id, call) for _ in range(3)] == [1, 0, 0]
    assert await valkey.get(KEYS.depth) == b"1" and await valkey.hget(KEYS.shares, b"s1") == b"1"
    assert await valkey.exists(KEYS.started(entry_id)) == 0


async def test_an_entry_that_names_no_call_is_let_go_of_without_touching_any_share(
    outbox: Outbox, valkey: Redis
) -> None:
    with anyio.fail_after(5):
        await enqueue(outbox, _call(), bound=100, fair_share=2)
        [(entry_id, _)] = await _read(valkey)
        assert await finish(outbox, KEYS, entry_id, None) == 1
    assert await valkey.get(KEYS.depth) == b"0" and await valkey.hget(KEYS.shares, b"s1") == b"1"


async def test_an_enqueue_valkey_runs_after_its_caller_gave_up_is_refused(outbox: Outbox, valkey: Redis) -> None:
    seconds, micros = await valkey.time()
    now_ms = seconds * 1000 + micros // 1000
    with anyio.fail_after(5):
        assert await enqueue(outbox, _call(), bound=100, fair_share=2, until=lambda: now_ms + 60_000) is not None
        with pytest.raises(Late, match="stopped waiting"):
            await enqueue(outbox, _call(), bound=100, fair_share=2, until=lambda: now_ms - 1)
    assert await valkey.get(KEYS.depth) == b"1" and await valkey.xlen(KEYS.stream) == 1
