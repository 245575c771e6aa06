"""Following streams without a group, against a real valkey-server, through a restart of it."""

from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from muster.stack import Stack, free_port
from shared.follow import BEGINNING, Batch, Follow, last_id
from shared.valkey import connect

pytestmark = pytest.mark.anyio


def _entries(batch: Batch) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [(stream, fields) for stream, entries in batch for _, fields in entries]


async def _next_entries(follow: Follow) -> list[tuple[bytes, dict[bytes, bytes]]]:
    async for batch in follow:
        if batch:
            return _entries(batch)
    raise AssertionError("the follow ended")


async def test_a_follow_starts_after_what_the_streams_hold_when_it_starts(valkey: Redis) -> None:
    await valkey.xadd("a", {b"n": b"old"})
    follow = Follow(valkey, ["a", "b"], block_ms=100)
    await follow.start()
    await valkey.xadd("b", {b"n": b"1"})
    await valkey.xadd("a", {b"n": b"2"})
    with anyio.fail_after(5):
        seen = await _next_entries(follow)
    assert sorted(seen) == [(b"a", {b"n": b"2"}), (b"b", {b"n": b"1"})]


async def test_a_follow_from_the_beginning_reads_everything_in_order(valkey: Redis) -> None:
    for n in range(5):
        await valkey.xadd("a", {b"n": b"%d" % n})
    follow = Follow(valkey, ["a"], since=BEGINNING, count=3, block_ms=100)
    seen: list[bytes] = []
    with anyio.fail_after(5):
        while len(seen) < 5:
            seen += [fields[b"n"] for _, fields in await _next_entries(follow)]
    assert seen == [b"0", b"1", b"2", b"3", b"4"]


async def test_a_read_that_finds_nothing_yields_an_empty_batch(valkey: Redis) -> None:
    follow = Follow(valkey, ["quiet"], block_ms=50)
    with anyio.fail_after(5):
        async for batch in follow:
            assert batch == []
            break
    assert await last_id(valkey, "quiet") == BEGINNING


async def test_a_follow_goes_on_where_it_left_off_after_valkey_restarted(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    port = free_port()
    client = connect(stack.valkey(port))
    seen: list[list[tuple[bytes, dict[bytes, bytes]]]] = []

    async def read(follow: Follow) -> None:
        seen.append(await _next_entries(follow))

    try:
        follow = Follow(client, ["a"], block_ms=100)
        await follow.start()
        await client.xadd("a", {b"n": b"before"})
        with anyio.fail_after(5):
            await read(follow)
        stack.stop_child(stack.children[0])  # SIGTERM: the append-only file keeps the stream
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, follow)
                await anyio.sleep(0.5)  # meanwhile the follow fails to read, and backs off
                await anyio.to_thread.run_sync(stack.valkey, port)
                await client.xadd("a", {b"n": b"after"})
        assert seen == [[(b"a", {b"n": b"before"})], [(b"a", {b"n": b"after"})]]
    finally:
        await client.aclose()
        stack.stop()
