"""Valkey access: redis-py clients for blocking reads and the control plane, and the coalescing writer of the hot
path with the few things every service writes through it (replies, bounded appends, scripts).

Every write the hot path makes in one event-loop turn goes out as one pipeline: at 64 concurrent callers
that cut the relay's CPU per call by 45% (../shared/reference/python-hot-path-costs.md).
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar

from hiredis import ReplyError
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection
from redis.asyncio.connection import SSLConnection as RedisSSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import sentinel, streams
from shared.messages import ReplyStreamEntry, encode
from shared.resp import Connection, pack

logger = logging.getLogger(__name__)

Arg = bytes | str | int | float


class AtWrite:
    """An argument computed when its command is written to Valkey rather than when it is queued: a loop that is
    busy for a while (a burst of thousands of requests) must not age it. Only in `Outbox.script`."""

    __slots__ = ("value",)

    def __init__(self, value: Callable[[], Arg]) -> None:
        self.value = value


Command = Sequence[Arg]

BLOCK_SECONDS = 5  # the longest blocking read muster makes


def connect(url: str, *, max_connections: int = 64, name: str | None = None, timeout: float = 5.0) -> Redis:
    """A client that returns bytes; `name` shows in CLIENT LIST, which is where an operator looks first.

    Connecting is bounded by `timeout`; the read timeout is that much longer than the longest blocking read
    muster makes, so that a read that simply found nothing is never mistaken for a dead connection. With a
    Sentinel URL (shared/sentinel.py) the client's pool asks the Sentinels for the primary on every new
    connection, and drops a connection to a demoted one.
    """
    options: dict[str, Any] = {
        # A pooled connection that Valkey dropped (a restart, a failover) fails the next command on it: tried once
        # more on a new connection, or every such connection fails one caller (and flaps /readyz) after a restart.
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [RedisConnectionError],
        "decode_responses": False,
        "max_connections": max_connections,
        "client_name": name,
        "health_check_interval": 30,
        "socket_timeout": BLOCK_SECONDS + timeout,
        "socket_connect_timeout": timeout,
    }
    address = sentinel.parse(url)
    if not address.is_sentinel:
        client: Redis = Redis.from_url(url, connection_class=plain_connection(address), **options)
        return client
    return sentinel_client(address, options)


class _BoundedWrites:
    """A redis-py connection that bounds a write with asyncio.timeout rather than asyncio.wait_for: Python 3.11's
    wait_for returns the result of a write that finished as its task was cancelled, and the cancellation is lost.
    A discovery loop cancelled so ran on, and its service never stopped (tests/shared/test_valkey.py)."""

    socket_timeout: float | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        send: Callable[[Any, bool], Awaitable[None]] = super().send_packed_command  # type: ignore[misc]
        if not timeout:
            await send(command, check_health)
            return
        self.socket_timeout = None  # the write under the bound below, not under redis-py's wait_for
        try:
            async with asyncio.timeout(timeout):
                await send(command, check_health)
        except TimeoutError:  # the connection was dropped on the way out (redis-py drops it on any interruption)
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class _Plain(_BoundedWrites, RedisConnection):
    pass


class _PlainSSL(_BoundedWrites, RedisSSLConnection):
    pass


def plain_connection(address: sentinel.Address) -> type[RedisConnection]:
    """The connection class for redis-py's (and FastStream's) clients of one node."""
    return _PlainSSL if address.tls else _Plain


def sentinel_client(address: sentinel.Address, options: dict[str, Any]) -> Redis:
    """A redis-py client of the primary that `address`'s Sentinels name."""
    credentials = {"username": address.username, "password": address.password}
    group = Sentinel(  # type: ignore[no-untyped-call]
        address.sentinels,
        sentinel_kwargs={
            "socket_timeout": options["socket_connect_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
            **(credentials if address.sentinel_auth else {}),
        },
        db=address.db,
        ssl=address.tls,
        **credentials,
    )
    connection = following_connection(address, options["socket_connect_timeout"])
    client: _FollowingRedis = group.master_for(
        address.primary_name, redis_class=_FollowingRedis, connection_class=connection, **options
    )
    client.sentinel_group = group
    follow_failovers(address, client)
    return client


class _Following(_BoundedWrites, SentinelManagedConnection):
    """A connection to the primary that finds it as the pipelining connection does (`sentinel.connect_to_primary`:
    the address the Sentinels give out, checked with ROLE, and asked again once connected), not from redis-py's
    SENTINEL MASTERS, which names the old primary until a failover has ended, while the old one takes writes and
    loses them when it is demoted, seconds later."""

    address: ClassVar[sentinel.Address]
    within: ClassVar[float]

    async def connect_to(self, address: tuple[str, int]) -> None:
        connect: Callable[[tuple[str, int]], Awaitable[None]] = super().connect_to
        if not self.connection_pool.is_master:
            await connect(address)
            return
        try:
            await sentinel.connect_to_primary(self.address, self.within, connect, self.disconnect)
        except sentinel.NoPrimary as exc:
            raise MasterNotFoundError(str(exc)) from exc

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # redis-py reconnects a dropped connection here to the address it last had, past connect() and so past the
        # Sentinels: a command retried after the failover's announcement dropped it went to the demoted primary.
        if not self.is_connected:
            connect: Callable[[], Awaitable[None]] = self.connect  # SentinelManagedConnection's: asks the Sentinels
            await connect()
        await super().send_packed_command(command, check_health)


class _FollowingSSL(_Following, SentinelManagedSSLConnection):
    pass


def following_connection(address: sentinel.Address, within: float) -> type[SentinelManagedConnection]:
    """The connection class for redis-py's (and FastStream's) Sentinel clients of `address`."""
    base = _FollowingSSL if address.tls else _Following
    return type("FollowingConnection", (base,), {"address": address, "within": within})


class _FollowingRedis(Redis):
    """A client of a Sentinel group's primary; closing it closes its connections to the Sentinels too, and stops
    following the failovers."""

    stop_following: Callable[[], None] | None = None
    sentinel_group: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.stop_following is not None:
            self.stop_following()
            self.stop_following = None
        await super().aclose(close_connection_pool)
        if self.sentinel_group is not None:
            await asyncio.gather(*(s.aclose() for s in self.sentinel_group.sentinels), return_exceptions=True)


def follow_failovers(address: sentinel.Address, client: Redis) -> None:
    """Drops `client`'s connections when the Sentinels announce a failover, so that none stays with a demoted
    primary (shared/sentinel.py); outside an event loop (no connection is made there either) it does nothing."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    background: set[asyncio.Task[None]] = set()

    def switched(new: tuple[str, int]) -> None:
        task = asyncio.ensure_future(client.connection_pool.disconnect())
        background.add(task)
        task.add_done_callback(background.discard)

    stop = sentinel.on_switch(address, switched)
    if isinstance(client, _FollowingRedis):
        client.stop_following = stop


async def ensure_group(client: Redis, server: str) -> None:
    """The workers' consumer group on a server's call stream, created at 0 with the stream if missing, so that
    no call waits in a stream no group reads (a group created at $ would skip what is already there)."""
    try:
        await client.xgroup_create(streams.calls(server), streams.GROUP_WORKERS, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def xadd(stream: bytes | str, maxlen: int, fields: Iterable[Arg]) -> tuple[Arg, ...]:
    """The XADD of one entry to a stream bounded at `maxlen` (a bound of streams.py), trimmed approximately."""
    return (b"XADD", stream, b"MAXLEN", b"~", maxlen, b"*", *fields)


# Scripts. Each runs on one key or on keys of one server's hash tag, so each stays on one Cluster node (the queue's
# own scripts are in queue.py: a call enters a queue only through queue.enqueue).

# KEYS: key. ARGV: expected value[, hash field]. Deletes the key (or the field of the hash) only while it holds
# the expected value: a holder lets go of what it holds, never of what another took over since.
COMPARE_AND_DELETE = b"""
if ARGV[2] then
  if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then return redis.call('HDEL', KEYS[1], ARGV[2]) end
  return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Outbox:
    """Queues commands and writes those of one loop turn in one piece; each caller awaits its own reply.

    The write happens in the loop's callback itself, not in a task: a flush costs one write, no extra turn.
    """

    def __init__(self, url: str, *, name: str | None = None, timeout: float = 5.0) -> None:
        # `timeout` bounds each command and each connection attempt: a frozen Valkey fails a caller that fast
        self.connection = Connection(url, name=name, connect_timeout=timeout, command_timeout=timeout)
        self._packed: list[bytes | Callable[[], bytes]] = []  # a callable: packed when written (AtWrite)
        self._futures: list[asyncio.Future[Any] | None] = []
        self._scheduled = False
        self._scripts: dict[bytes, bytes] = {}  # script -> sha
        self._reply_streams: dict[bytes, tuple[bytes, float]] = {}  # replica -> its stream, when to renew its TTL

    def send(self, *command: Arg) -> "asyncio.Future[Any]":
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(command, future)
        return future

    def post(self, *command: Arg) -> None:
        """Send without waiting for the reply; a failure is logged."""
        self._queue(command, None)

    def append(self, stream: bytes | str, maxlen: int, fields: Iterable[Arg]) -> None:
        """Append an entry to a bounded stream, without waiting."""
        self._queue(xadd(stream, maxlen, fields), None)

    def publish(self, stream: str, message: BaseModel) -> None:
        """Append a control-plane message to one of the event streams, without waiting."""
        self.append(stream, streams.EVENTS_MAXLEN, encode(message))

    def reply(self, replica: bytes, entry: ReplyStreamEntry) -> None:
        """Append to the reply stream of an ingress replica, without waiting.

        The stream expires REPLIES_TTL after the last reply any writer here sent to it, so the stream of a replica
        that is gone does not stay; a live replica's stream may expire while idle and is created again by the
        next reply, whose id is newer than anything its reader has seen.
        """
        stream, renew = self._reply_stream(replica)
        self.append(stream, streams.REPLIES_MAXLEN, entry.fields())
        if renew:
            self.post(b"EXPIRE", stream, streams.REPLIES_TTL)

    def deliver(self, replica: bytes, entry: ReplyStreamEntry) -> "asyncio.Future[Any]":
        """As `reply`, for a reply that must arrive: the future says whether Valkey has it."""
        stream, renew = self._reply_stream(replica)
        written = self.send(*xadd(stream, streams.REPLIES_MAXLEN, entry.fields()))
        if renew:
            self.post(b"EXPIRE", stream, streams.REPLIES_TTL)
        return written

    def _reply_stream(self, replica: bytes) -> tuple[bytes, bool]:
        """The replica's reply stream, and whether its lifetime is due for renewal (after this append)."""
        now = time.monotonic()
        known = self._reply_streams.get(replica)
        if known is not None and known[1] >= now:
            return known[0], False
        stream = streams.replies(replica.decode()).encode()
        self._reply_streams[replica] = (stream, now + streams.REPLIES_TTL_RENEW)
        return stream, True

    async def script(self, script: bytes, keys: Sequence[bytes | str], args: Sequence[Arg | AtWrite]) -> Any:
        """Run a Lua script by its SHA; where Valkey does not know it (yet, or any more: it restarted), by its text,
        which also teaches it to Valkey. Any number of callers may meet NOSCRIPT at once: each just runs EVAL."""
        sha = self._scripts.get(script)
        if sha is None:
            sha = self._scripts[script] = hashlib.sha1(script).hexdigest().encode()
        try:
            return await self._send_at_write((b"EVALSHA", sha, len(keys), *keys, *args))
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._send_at_write((b"EVAL", script, len(keys), *keys, *args))

    def _send_at_write(self, command: Sequence[Arg | AtWrite]) -> "asyncio.Future[Any]":
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not any(isinstance(arg, AtWrite) for arg in command):
            self._queue(command, future)  # type: ignore[arg-type]  # no AtWrite among them
            return future

        def packed() -> bytes:
            return pack(*(arg.value() if isinstance(arg, AtWrite) else arg for arg in command))

        self._packed.append(packed)
        self._futures.append(future)
        self._schedule()
        return future

    def _queue(self, command: Command, future: "asyncio.Future[Any] | None") -> None:
        self._packed.append(pack(*command))
        self._futures.append(future)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        packed = b"".join(p if isinstance(p, bytes) else p() for p in self._packed)
        futures = self._futures
        self._packed, self._futures = [], []
        self.connection.send(packed, futures)  # bounded and timed there; a failure reaches the futures

    async def drain(self) -> None:
        """Waits until everything queued so far has been answered."""
        if self._packed:
            await asyncio.sleep(0)
        await self.send(b"PING")

    @property
    def closed(self) -> bool:
        """Closed by its owner: nothing sent through it will reach Valkey."""
        return self.connection.closed

    def close(self) -> None:
        self.connection.close()
