"""A pipelining Valkey connection for the hot path: commands are packed and parsed by hiredis, written in one
piece per event-loop turn, and answered in order.

redis-py takes a pool connection, a task and a pipeline object for every flush; on the per-call path that
overhead was most of the queue's cost (../shared/reference/python-hot-path-costs.md: 0.40 against 0.24 ms of
CPU per call, and +1.35 against +0.63 ms of latency at one caller). Blocking reads (XREAD BLOCK) stall a
pipeline, so they never go through this connection.

Bounds: while commands wait, valkey answers one within `command_timeout` or the connection is dropped with
everything waiting on it (one timer per connection, not one per command): a frozen or unreachable valkey fails
its callers that fast, while a busy one working through a burst, answering all along, is given the time it
needs (the queue bounds keep that finite); connecting, with AUTH, SELECT and CLIENT SETNAME, is bounded by
`connect_timeout`; commands sent while the connection is down wait in a backlog bounded in count and bytes.

With a Sentinel URL (shared/sentinel.py), each (re)connection asks the Sentinels for the primary first, and a
node that answers READONLY (a primary demoted by a failover) is dropped, so the next command finds the new one.

Errors, all ConnectionError (the ingress answers those with -32006 and a retry hint):

    ConnectionClosed        the command got no reply; it may have run
    ├── Unreachable         "cannot reach valkey": not connected, so the command was not sent (or valkey said it
    │                       cannot take commands yet: LOADING its data, BUSY with a script, ...)
    ├── CommandTimeout      valkey answered nothing for command_timeout; the connection was dropped
    └── NotPrimary          the node is a replica now (READONLY): the command did not run; the connection was dropped
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis

from shared.sentinel import NoPrimary, connect_to_primary, on_switch, parse

logger = logging.getLogger(__name__)

Waiter = asyncio.Future[Any] | None  # None: sent without waiting for the reply
_CONFIRM = 0.02  # seconds: an overdue command is looked at again after the loop has polled for replies


class ConnectionClosed(ConnectionError):
    """The connection to Valkey broke or was dropped before the command's reply came."""


class Unreachable(ConnectionClosed):
    """Valkey cannot be reached (or refused the connection's setup): the command was not sent."""


class CommandTimeout(ConnectionClosed):
    """Valkey answered nothing for the command timeout while commands waited."""


class NotPrimary(ConnectionClosed):
    """The node refused a write as a replica: a failover demoted it. The command did not run."""


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.reader = hiredis.Reader()
        self.waiting: deque[Waiter] = deque()
        self.batches: deque[list[Any]] = deque()  # [written at, replies still due], oldest first
        self.timer: asyncio.TimerHandle | None = None
        self.suspect: list[Any] | None = None  # the batch found overdue once, looked at again before dropping
        self.progress = 0.0  # when valkey last answered on this connection
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def write(self, packed: bytes, waiters: list[Waiter]) -> None:
        assert self.transport is not None
        if waiters:
            now = self.loop.time()
            self.waiting.extend(waiters)
            self.batches.append([now, len(waiters)])
            if self.timer is None:
                self.timer = self.loop.call_at(now + self.timeout, self._check)
        self.transport.write(packed)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        answered = 0
        waiting = self.waiting
        demoted = False
        try:
            while (reply := self.reader.gets()) is not False:
                if not waiting:
                    self.drop(ConnectionClosed("valkey sent a reply to no command; connection dropped"))
                    return
                answered += 1
                future = waiting.popleft()
                if isinstance(reply, hiredis.ReplyError):
                    demoted = _refused(future, reply) or demoted
                elif future is not None and not future.done():
                    future.set_result(reply)
        except hiredis.ProtocolError as exc:
            self.drop(ConnectionClosed(f"valkey sent a malformed reply ({exc}); connection dropped"))
            return
        if demoted:  # the next command reconnects, and with Sentinel finds the new primary
            self.drop(NotPrimary("valkey is a replica now (failover); connection dropped"))
            return
        if answered:
            self._answered(answered)

    def _answered(self, count: int) -> None:
        self.progress = self.loop.time()
        batches = self.batches
        while count:
            batch = batches[0]
            if batch[1] > count:
                batch[1] -= count
                break
            count -= batch[1]
            batches.popleft()

    def _check(self) -> None:
        self.timer = None
        if self.lost or not self.batches:
            return
        oldest = self.batches[0]
        due = max(oldest[0], self.progress) + self.timeout
        if self.loop.time() < due:
            self.suspect = None
            self.timer = self.loop.call_at(due, self._check)
        elif self.suspect is not oldest:
            # Overdue, unless its reply is already in the socket and a blocked loop has not read it yet: with
            # uvloop, timers run before the poll for I/O. Look again once the loop has polled.
            self.suspect = oldest
            self.timer = self.loop.call_at(self.loop.time() + _CONFIRM, self._check)
        else:
            self.drop(CommandTimeout(f"valkey did not answer within {self.timeout}s; connection dropped"))

    def drop(self, error: ConnectionClosed) -> None:
        """Fail everything waiting with `error` and close: replies come in order, so nothing after it can pair."""
        self._fail(error)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: ConnectionClosed) -> None:
        self.lost = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.batches.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # marked retrieved: a caller that went away must not warn

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionClosed(f"connection to valkey lost: {exc or 'closed'}"))


def _refused(future: Waiter, reply: hiredis.ReplyError) -> bool:
    """Hands Valkey's refusal to its command; True when it says the node is a replica now (READONLY)."""
    demoted = str(reply).startswith("READONLY")
    error = NotPrimary("valkey is a replica now (failover); the command did not run") if demoted else _refusal(reply)
    if future is None:
        logger.error("valkey refused a command: %s", error)
    elif not future.done():
        future.set_exception(error)
    return demoted


class Connection:
    """One lazily (re)connected pipelining connection. `send` writes packed commands; replies resolve the futures
    passed with them, in order. While the connection is down, what is sent waits in the backlog (at most
    `backlog_commands` commands and `backlog_bytes` bytes; beyond that it fails at once) until it is up again."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        backlog_commands: int = 10_000,
        backlog_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.address = parse(url)
        self.host, self.port = self.address.host, self.address.port
        self.password, self.username = self.address.password, self.address.username
        self.db = self.address.db
        self.tls = self.address.tls
        self.name = name
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.backlog_commands = backlog_commands
        self.backlog_bytes = backlog_bytes
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._backlog: list[tuple[bytes, list[Waiter]]] = []
        self._backlog_count = 0
        self._backlog_size = 0
        self._failures = 0  # connection attempts that failed in a row
        self._closed = False
        self._unwatch: Callable[[], None] | None = None  # stops following the Sentinels' failover announcements

    def send(self, packed: bytes, waiters: list[Waiter]) -> None:
        """Write now if connected, else queue and connect. Never raises: failures reach the waiters."""
        protocol = self._protocol
        if protocol is not None and not protocol.lost and not self._backlog:
            assert protocol.transport is not None
            if protocol.transport.get_write_buffer_size() > self.backlog_bytes:  # connected, but valkey is not reading
                _fail(waiters, ConnectionClosed(
                    f"valkey is not reading: more than backlog_bytes={self.backlog_bytes} bytes wait to be written"
                ))  # fmt: skip
                return
            protocol.write(packed, waiters)
            return
        if (
            self._backlog_count + len(waiters) > self.backlog_commands
            or self._backlog_size + len(packed) > self.backlog_bytes
        ):
            _fail(waiters, Unreachable(
                f"cannot reach valkey: {self._backlog_count} commands ({self._backlog_size} bytes) already wait "
                f"for the connection (backlog_commands={self.backlog_commands}, backlog_bytes={self.backlog_bytes})"
            ))  # fmt: skip
            return
        self._backlog.append((packed, waiters))
        self._backlog_count += len(waiters)
        self._backlog_size += len(packed)
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            if self._closed:
                raise Unreachable("cannot reach valkey: the connection is closed")
            try:
                protocol = await self._connect()
            except Unreachable:
                raise
            except NoPrimary as exc:
                raise Unreachable(f"cannot reach valkey: {exc}") from exc
            except (OSError, TimeoutError) as exc:
                reason = f"no connection within connect_timeout={self.connect_timeout}s" if isinstance(
                    exc, TimeoutError) else str(exc) or type(exc).__name__  # fmt: skip
                raise Unreachable(f"cannot reach valkey at {self.host}:{self.port}: {reason}") from exc
            self._protocol = protocol
            if self._failures:
                logger.warning(
                    "valkey at %s:%d reached again after %d failed attempts", self.host, self.port, self._failures
                )
                self._failures = 0
            if self.address.is_sentinel and self._unwatch is None:
                self._unwatch = on_switch(self.address, self._switched)
            backlog = self._take_backlog()
            for packed, waiters in backlog:
                protocol.write(packed, waiters)
        except Unreachable as exc:
            for _, waiters in self._take_backlog():
                _fail(waiters, exc)
            self._failures += 1
            # once per outage: every caller learns it from its own error, and each retry would log it again
            logger.log(logging.ERROR if self._failures == 1 else logging.DEBUG, "%s", exc)
        finally:
            self._connecting = None

    def _take_backlog(self) -> list[tuple[bytes, list[Waiter]]]:
        backlog, self._backlog = self._backlog, []
        self._backlog_count = self._backlog_size = 0
        return backlog

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        setup: list[tuple[str | int, ...]] = []
        if self.password is not None:
            setup.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        if self.name:
            setup.append(("CLIENT", "SETNAME", self.name))
        async with asyncio.timeout(self.connect_timeout):
            protocol = await self._open(loop)
            try:
                futures: list[Waiter] = [loop.create_future() for _ in setup]
                if setup:
                    protocol.write(b"".join(pack(*command) for command in setup), futures)
                for command, future in zip(setup, futures, strict=True):
                    assert future is not None
                    try:
                        reply = await future
                    except hiredis.ReplyError as exc:
                        reply = exc
                    if reply != b"OK":  # the reply says why; the command (AUTH carries the password) does not
                        raise Unreachable(f"cannot reach valkey: it refused {command[0]}: {reply}")
            except BaseException:
                protocol.drop(Unreachable("cannot reach valkey: connection set-up failed"))
                raise
        return protocol

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        """A connection to the node: with a Sentinel URL, to the primary the Sentinels name (connect_to_primary)."""
        timeout = self.command_timeout
        opened: list[_Protocol] = []

        async def connect(node: tuple[str, int]) -> None:
            self.host, self.port = node
            _, protocol = await loop.create_connection(lambda: _Protocol(timeout), *node, ssl=self.tls or None)
            opened.append(protocol)

        async def drop() -> None:
            opened[-1].drop(ConnectionClosed("valkey failed over while connecting; connection dropped"))

        if self.address.is_sentinel:
            await connect_to_primary(self.address, self.connect_timeout, connect, drop)
        else:
            await connect((self.host, self.port))
        return opened[-1]

    def _switched(self, new: tuple[str, int]) -> None:
        protocol = self._protocol
        if protocol is not None and not protocol.lost and (self.host, self.port) != new:
            protocol.drop(ConnectionClosed(f"valkey failed over to {new[0]}:{new[1]}; connection dropped"))

    @property
    def closed(self) -> bool:
        """Closed by its owner (never by Valkey): nothing sent on it will be answered."""
        return self._closed

    def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        for _, waiters in self._take_backlog():
            _fail(waiters, ConnectionClosed("connection to valkey closed"))
        if self._protocol is not None:
            self._protocol.drop(ConnectionClosed("connection to valkey closed"))
        self._protocol = None


# Refusals that say "not now" about Valkey itself, not about the command: it did not run, and it may later.
_NOT_NOW = (b"LOADING", b"BUSY ", b"MASTERDOWN", b"TRYAGAIN")


def _refusal(reply: hiredis.ReplyError) -> Exception:
    """The error a refused command raises: Unreachable where Valkey cannot take commands yet (loading its data
    after a restart, running a long script), so that callers retry as they do while it is down."""
    text = str(reply)
    if text.encode().startswith(_NOT_NOW):
        return Unreachable(f"cannot reach valkey: it answers {text}")
    return reply


def _fail(waiters: list[Waiter], error: ConnectionClosed) -> None:
    for future in waiters:
        if future is not None and not future.done():
            future.set_exception(error)
            future.exception()


def pack(*command: Any) -> bytes:
    return hiredis.pack_command(command)  # type: ignore[no-any-return]
