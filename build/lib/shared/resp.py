"""A pipelining Valkey connection for the hot path: commands are packed and parsed by hiredis, written in one
piece per event-loop turn, and answered in order.

redis-py takes a pool connection, a task and a pipeline object for every flush; on the per-call path that
overhead was most of the queue's cost (../shared/reference/python-hot-path-costs.md: 0.40 against 0.24 ms of
CPU per call, and +1.35 against +0.63 ms of latency at one caller). Blocking reads (XREAD BLOCK) stall a
pipeline, so they never go through this connection.
"""

import asyncio
import logging
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

logger = logging.getLogger(__name__)


class ConnectionClosed(ConnectionError):
    pass


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any] | None] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if future is None:  # sent without waiting for the reply
                if isinstance(reply, hiredis.ReplyError):
                    logger.error("valkey refused a command: %s", reply)
            elif not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        error = ConnectionClosed(f"connection to valkey lost: {exc or 'closed'}")
        while self.waiting:
            future = self.waiting.popleft()
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # marked retrieved: a caller that went away must not warn


class Connection:
    """One lazily (re)connected pipelining connection. `write` sends packed commands; replies resolve the
    futures passed with them, in order."""

    def __init__(self, url: str, *, name: str | None = None, connect_timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        self.db = int(parts.path.lstrip("/") or 0)
        self.tls = parts.scheme == "rediss"
        self.name = name
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    def ready(self) -> _Protocol | None:
        """The live connection, if there is one now."""
        protocol = self._protocol
        return protocol if protocol is not None and not protocol.lost else None

    async def protocol(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=self.tls or None)
        setup: list[tuple[str | int, ...]] = []
        if self.password is not None:
            setup.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        if self.name:
            setup.append(("CLIENT", "SETNAME", self.name))
        for command in setup:
            future = loop.create_future()
            protocol.waiting.append(future)
            assert protocol.transport is not None
            protocol.transport.write(pack(*command))
            await future
        self._protocol = protocol
        return protocol

    def write(self, protocol: _Protocol, packed: bytes, futures: list[asyncio.Future[Any] | None]) -> None:
        if protocol.lost or protocol.transport is None:
            raise ConnectionClosed("connection to valkey lost")
        protocol.waiting.extend(futures)
        protocol.transport.write(packed)

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


def pack(*command: Any) -> bytes:
    return hiredis.pack_command(command)  # type: ignore[no-any-return]
