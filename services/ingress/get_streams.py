"""The GET streams open on this replica, by session id: where notifications outside any call reach a client."""

import asyncio
from collections.abc import Callable

_CLOSE = b""  # queued to a stream: end it


def _ignore(message: bytes) -> None:
    pass


class GetStreams:
    def __init__(self, sent: Callable[[bytes], None] = _ignore) -> None:
        self.queues: dict[str, asyncio.Queue[bytes]] = {}
        self.sent = sent  # told of every notification queued for a stream (telemetry counts them)

    def open(self, session_id: str) -> "asyncio.Queue[bytes] | None":
        """A queue for the session's stream; None when the session has one open already."""
        if session_id in self.queues:
            return None
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
        self.queues[session_id] = queue
        return queue

    def release(self, session_id: str, queue: "asyncio.Queue[bytes]") -> None:
        if self.queues.get(session_id) is queue:
            del self.queues[session_id]

    def send(self, session_id: str, message: bytes) -> bool:
        queue = self.queues.get(session_id)
        if queue is None:
            return False
        try:
            queue.put_nowait(message)
        except asyncio.QueueFull:  # a client that reads nothing loses notifications, not the replica's memory
            return False
        if message:
            self.sent(message)
        return True

    def broadcast(self, message: bytes) -> None:
        for session_id in list(self.queues):
            self.send(session_id, message)

    def close(self, session_id: str) -> None:
        self.send(session_id, _CLOSE)

    def close_all(self) -> None:
        for session_id in list(self.queues):
            self.close(session_id)
