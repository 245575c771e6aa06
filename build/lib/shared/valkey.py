"""Valkey access: redis-py clients for blocking reads and the control plane, the coalescing writer of the hot
path, and the bounded enqueue.

Every write the hot path makes in one event-loop turn goes out as one pipeline: at 64 concurrent callers
that cut the relay's CPU per call by 45% (../shared/reference/python-hot-path-costs.md).
"""

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from hiredis import ReplyError
from pydantic import BaseModel
from redis.asyncio import Redis

from shared import streams
from shared.messages import DATA, Reply
from shared.resp import Connection, ConnectionClosed, pack
from shared.streams import EVENTS_MAXLEN

logger = logging.getLogger(__name__)

Command = Sequence[bytes | str | int | float]


def connect(url: str, *, max_connections: int = 64, name: str | None = None) -> Redis:
    """A client that returns bytes; `name` shows in CLIENT LIST, which is where an operator looks first.

    The read timeout is longer than the longest blocking read muster makes (5 s), so that a read that simply
    found nothing is never mistaken for a dead connection.
    """
    client: Redis = Redis.from_url(
        url,
        decode_responses=False,
        max_connections=max_connections,
        client_name=name,
        health_check_interval=30,
        socket_timeout=BLOCK_SECONDS * 3,
        socket_connect_timeout=5,
    )
    return client


BLOCK_SECONDS = 5
REPLY_TTL = 3600


# KEYS: stream, depth counter. ARGV: bound, maxlen, then the entry's field/value pairs.
# The counter holds accepted, not yet acknowledged calls; workers decrement it when they acknowledge.
ENQUEUE = b"""
local depth = redis.call('INCR', KEYS[2])
if depth > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[2])
  return false
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
"""


class Outbox:
    """Queues commands and writes those of one loop turn in one piece; each caller awaits its own reply.

    The write happens in the loop's callback itself, not in a task: a flush costs one write, no extra turn.
    """

    def __init__(self, url: str, *, name: str | None = None) -> None:
        self.connection = Connection(url, name=name)
        self._packed: list[bytes] = []
        self._futures: list[asyncio.Future[Any] | None] = []
        self._scheduled = False
        self._backlog: list[tuple[bytes, list[asyncio.Future[Any] | None]]] = []
        self._reconnecting: asyncio.Task[None] | None = None
        self._scripts: dict[bytes, bytes] = {}  # script -> sha
        self._expiry: dict[bytes, float] = {}  # replica -> when its reply stream's expiry is due to be renewed

    def send(self, *command: bytes | str | int | float) -> "asyncio.Future[Any]":
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(command, future)
        return future

    def reply(self, replica: bytes, reply: Reply) -> None:
        """Append a reply to the stream of the ingress replica waiting for it, without waiting.

        The stream expires an hour after the last reply any writer here sent to it, so the stream of a replica
        that is gone does not stay; a live replica's stream may expire while idle and is created again by the
        next reply, whose id is newer than anything its reader has seen.
        """
        stream = streams.replies(replica.decode())
        self.post(b"XADD", stream, b"MAXLEN", b"~", streams.REPLIES_MAXLEN, b"*", *reply.fields())
        now = time.monotonic()
        if self._expiry.get(replica, 0.0) < now:
            self.post(b"EXPIRE", stream, REPLY_TTL)
            self._expiry[replica] = now + 60

    def post(self, *command: bytes | str | int | float) -> None:
        """Send without waiting for the reply; a failure is logged."""
        self._queue(command, None)

    def publish(self, stream: str, message: BaseModel, maxlen: int = EVENTS_MAXLEN) -> None:
        """Append a control-plane message to a bounded stream, without waiting."""
        self.post(b"XADD", stream, b"MAXLEN", b"~", maxlen, b"*", DATA, message.model_dump_json(by_alias=True))

    def _queue(self, command: Command, future: "asyncio.Future[Any] | None") -> None:
        self._packed.append(pack(*command))
        self._futures.append(future)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def script(self, script: bytes, keys: Sequence[bytes | str], args: Sequence[bytes | str | int]) -> Any:
        sha = self._scripts.get(script)
        if sha is None:
            sha = self._scripts[script] = await self.send(b"SCRIPT", b"LOAD", script)
        try:
            return await self.send(b"EVALSHA", sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            del self._scripts[script]  # Valkey restarted and forgot its scripts
            return await self.script(script, keys, args)

    def _flush(self) -> None:
        self._scheduled = False
        batch = (b"".join(self._packed), self._futures)
        self._packed, self._futures = [], []
        protocol = self.connection.ready()
        if protocol is not None and not self._backlog:
            self.connection.write(protocol, *batch)
            return
        self._backlog.append(batch)
        if self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            protocol = await self.connection.protocol()
            backlog, self._backlog = self._backlog, []
            for packed, futures in backlog:
                self.connection.write(protocol, packed, futures)
        except (OSError, TimeoutError, ReplyError) as exc:
            backlog, self._backlog = self._backlog, []
            error = ConnectionClosed(f"cannot reach valkey: {exc or type(exc).__name__}")
            for _, futures in backlog:
                for future in futures:
                    if future is not None and not future.done():
                        future.set_exception(error)
                        future.exception()
            logger.error("%s", error)
        finally:
            self._reconnecting = None

    async def drain(self) -> None:
        """Waits until everything queued so far has been answered."""
        if self._packed or self._backlog:
            await asyncio.sleep(0)
        await self.send(b"PING")

    def close(self) -> None:
        self.connection.close()
