"""Sentinel addresses: how a URL is read, and both kinds of Valkey client following a real failover (a primary, a
replica and a Sentinel, all valkey-server processes): a forced one, where the old primary is demoted and answers
READONLY, and a SIGKILL of the primary."""

import asyncio
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from faststream.redis import RedisSentinelBroker
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from shared.resp import Connection, NotPrimary, pack
from shared.sentinel import Address, NoPrimary, on_switch, parse, primary
from shared.valkey import Outbox, connect, following_connection
from tests.sentinel import PRIMARY_NAME, Group, start_group

pytestmark = pytest.mark.anyio

# What a caller may see at the moment of a failover: each is a ConnectionError or a RedisError it retries.
CLEAR_ERRORS = {"ConnectionClosed", "Unreachable", "NotPrimary", "CommandTimeout", "ConnectionError", "ReadOnlyError",
                "TimeoutError", "MasterNotFoundError"}  # fmt: skip

PARSED = [
    ("redis://127.0.0.1:6379/0", Address("127.0.0.1", 6379)),
    ("redis://h", Address("h", 6379)),
    ("rediss://u:p%2Fw@h:7000/3", Address("h", 7000, 3, "u", "p/w", tls=True)),
    (
        "redis+sentinel://a:26379,b:26380/mymaster",
        Address("a", 26379, sentinels=(("a", 26379), ("b", 26380)), primary_name="mymaster"),
    ),
    (
        "rediss+sentinel://:pw@a,[::1]:26390/m/2?sentinel_auth=yes",
        Address("a", 26379, 2, None, "pw", True, (("a", 26379), ("::1", 26390)), "m", sentinel_auth=True),
    ),
]

REFUSED = [
    ("http://h:6379", "must start with redis://"),
    ("redis://:pw@h:0", "the port must be a number from 1 to 65535"),
    ("redis://h/zero", "the database must be a number"),
    ("redis+sentinel://a:26379", "names the primary after the hosts"),
    ("redis+sentinel://a:26379/m/0/x", "redis+sentinel://host:port,host:port/primary[/db]"),
    ("redis+sentinel://a:26379,:1/m", "names no host"),
    ("redis+sentinel://a/m?sentinel_auth=maybe", "sentinel_auth must be yes or no"),
]


@pytest.mark.parametrize(("url", "address"), PARSED)
def test_a_url_names_one_node_or_a_sentinel_group(url: str, address: Address) -> None:
    assert parse(url) == address


@pytest.mark.parametrize(("url", "problem"), REFUSED)
def test_a_url_that_names_nothing_usable_is_refused_with_the_reason(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse(url)


def test_a_node_url_carries_the_credentials_and_database_but_not_the_sentinels() -> None:
    address = parse("redis+sentinel://us%40er:p%3Aw@s1:26379/m/4")
    assert address.node_url("10.0.0.7", 6380) == "redis://us%40er:p%3Aw@10.0.0.7:6380/4"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    yield from start_group(tmp_path)


async def test_the_sentinels_name_the_primary_and_a_missing_one_is_a_clear_error(group: Group) -> None:
    assert await primary(parse(group.url), 2.0) == ("127.0.0.1", group.ports[0])
    with pytest.raises(NoPrimary, match="knows no primary 'nobody'"):
        await primary(parse(f"redis+sentinel://127.0.0.1:{group.sentinel_port}/nobody"), 2.0)


async def writes_until(outbox: Outbox, client: Any, stop: anyio.Event, failures: list[str]) -> int:
    """INCRs through both clients until `stop`; returns how many the pipelining connection got answered."""
    done = 0
    while not stop.is_set():
        try:
            await outbox.send(b"INCR", b"pipelined")
            await client.incr("pooled")
            done += 1
        except (ConnectionError, RedisError) as exc:  # the moment of the failover: clear, retryable errors
            failures.append(type(exc).__name__)
            await anyio.sleep(0.1)
        await anyio.sleep(0.01)
    return done


async def follow_a_failover(group: Group, fail_over: Any) -> None:
    outbox = Outbox(group.url, name="test-sentinel")
    client = connect(group.url, name="test-sentinel")
    old, new = group.ports
    stop = anyio.Event()
    failures: list[str] = []
    announced = anyio.Event()
    unfollow = on_switch(parse(group.url), lambda new: announced.set())
    try:
        assert await outbox.send(b"SET", b"before", b"1") == b"OK"
        async with anyio.create_task_group() as tg:
            counted: list[int] = []

            async def write() -> None:
                counted.append(await writes_until(outbox, client, stop, failures))

            tg.start_soon(write)
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(fail_over)
            await anyio.to_thread.run_sync(group.wait_primary, new)
            # The Sentinels name the new primary a moment before they announce the switch (and seconds before they
            # demote the old one): until the announcement a client that kept its connection writes where it was.
            with anyio.fail_after(15):
                await announced.wait()
            await anyio.sleep(1.0)  # the writers go on against the new primary
            before = counted
            stop.set()
        assert before and before[0] > 0
        # after the failover both clients write to the new primary, without being told anything
        with anyio.fail_after(15):
            while True:
                try:
                    await outbox.send(b"SET", b"after", b"1")
                    await client.set("after-pooled", b"1")
                    break
                except (ConnectionError, RedisError):
                    await anyio.sleep(0.2)
        assert group.ask(new, "GET", "after") == b"1" and group.ask(new, "GET", "after-pooled") == b"1"
        assert set(failures) <= CLEAR_ERRORS, failures
        assert outbox.connection.port == new
    finally:
        unfollow()
        outbox.close()
        await client.aclose()
        await anyio.sleep(0.1)  # for the closed connections to be let go of
    assert old != new


async def test_both_clients_follow_a_forced_failover_where_the_old_primary_is_demoted(group: Group) -> None:
    def fail_over() -> None:
        group.ask(group.sentinel_port, "SENTINEL", "FAILOVER", PRIMARY_NAME)

    await follow_a_failover(group, fail_over)
    # The Sentinel turns the old primary into a replica only seconds later; until then it takes writes, and loses
    # them. Neither client wrote there after the failover was announced.
    assert group.role(group.ports[0]) == b"master"
    assert (
        group.ask(group.ports[0], "GET", "after") is None and group.ask(group.ports[0], "GET", "after-pooled") is None
    )


async def test_both_clients_follow_a_failover_after_the_primary_was_killed(group: Group) -> None:
    def fail_over() -> None:
        group.stack.stop_child(group.node(group.ports[0]), signal.SIGKILL)

    await follow_a_failover(group, fail_over)


async def test_a_write_refused_by_a_replica_is_reported_as_not_run_and_the_connection_dropped(group: Group) -> None:
    # what a demoted primary answers: READONLY. The command did not run; the next one connects (and asks) anew.
    plain = Connection(f"redis://127.0.0.1:{group.ports[1]}/0")
    try:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        plain.send(pack("SET", "x", "1"), [future])
        with pytest.raises(NotPrimary, match="the command did not run"):
            await future
        assert plain._protocol is not None and plain._protocol.lost
        future = asyncio.get_running_loop().create_future()
        plain.send(pack("GET", "x"), [future])
        assert await future is None  # a read on a new connection: the replica answers it
    finally:
        plain.close()


class FailOverOnce:
    """The injected fault: a forced failover, once, right after a client was told the primary and before it
    connects to it, so that the failover's announcement finds no connection of it to drop (the old primary is not
    demoted for a few seconds more, and takes writes meanwhile). Wraps `sentinel.primary` and redis-py's own
    `Sentinel.discover_master`, whichever a client asks."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.done = False

    async def _after(self, answer: Any) -> Any:
        if not self.done:
            self.done = True
            self.group.ask(self.group.sentinel_port, "SENTINEL", "FAILOVER", PRIMARY_NAME)
            await anyio.to_thread.run_sync(self.group.wait_primary, self.group.ports[1])
        return answer

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        discover = Sentinel.discover_master

        async def named(address: Address, within: float) -> tuple[str, int]:
            return await self._after(await primary(address, within))  # type: ignore[no-any-return]

        async def discovered(sentinels: Sentinel, service_name: str) -> Any:
            return await self._after(await discover(sentinels, service_name))

        monkeypatch.setattr("shared.sentinel.primary", named)
        monkeypatch.setattr(Sentinel, "discover_master", discovered)


def only_on_the_new_primary(group: Group, key: str) -> bool:
    old, new = group.ports
    return group.ask(new, "GET", key) == b"1" and group.ask(old, "GET", key) is None


async def test_the_pipelining_connection_does_not_stay_with_a_primary_that_failed_over_while_it_connected(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    group.wait_replica_known()
    FailOverOnce(group).install(monkeypatch)
    outbox = Outbox(group.url, name="test-sentinel", timeout=20)
    try:
        assert await outbox.send(b"SET", b"connected", b"1") == b"OK"
        # on the new primary, not on the old one that took it and would lose it once demoted
        assert outbox.connection.port == group.ports[1] and only_on_the_new_primary(group, "connected")
    finally:
        outbox.close()


async def test_the_pooled_client_does_not_stay_with_a_primary_that_failed_over_while_it_connected(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    group.wait_replica_known()
    FailOverOnce(group).install(monkeypatch)
    client = connect(group.url, name="test-sentinel", timeout=20)
    try:
        await client.set("connected-pooled", b"1")
        assert only_on_the_new_primary(group, "connected-pooled")
    finally:
        await client.aclose()


async def test_a_pooled_command_retried_after_the_announcement_dropped_its_connection_goes_to_the_new_primary(
    group: Group,
) -> None:
    # The announcement drops every pooled connection, those carrying a command too; redis-py retries that command
    # on the same connection object, which reconnects where it was: to the old primary, not demoted for seconds.
    group.wait_replica_known()
    client = connect(group.url, name="test-sentinel", timeout=20)
    try:
        await client.set("before", b"1")
        pool: Any = client.connection_pool
        conn = await pool.get_connection()
        assert conn.port == group.ports[0]
        group.ask(group.sentinel_port, "SENTINEL", "FAILOVER", PRIMARY_NAME)
        await anyio.to_thread.run_sync(group.wait_primary, group.ports[1])
        assert group.role(group.ports[0]) == b"master"  # still taking writes, and losing them when demoted
        await conn.disconnect()  # what the announcement does
        await conn.send_command("SET", "retried", "1")  # what redis-py's retry of the command in flight does
        assert await conn.read_response() == b"OK"
        await pool.release(conn)
        assert only_on_the_new_primary(group, "retried")
    finally:
        await client.aclose()


async def test_the_workers_faststream_client_does_not_stay_with_a_primary_that_failed_over_while_it_connected(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    group.wait_replica_known()
    FailOverOnce(group).install(monkeypatch)
    address = parse(group.url)
    broker = RedisSentinelBroker(  # as services/worker/app.py builds it
        address.node_url("127.0.0.1", 6379),
        sentinels=address.sentinels,
        sentinel_master_name=address.primary_name,
        connection_class=following_connection(address, 20),
    )
    client = await broker.connect()
    try:
        await client.set("connected-faststream", b"1")
        assert only_on_the_new_primary(group, "connected-faststream")
    finally:
        await broker.stop()
        for asked in cast(Any, client.connection_pool).sentinel_manager.sentinels:  # the broker leaves these open
            await asked.aclose()
