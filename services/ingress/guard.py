"""uvicorn's httptools protocol with the bounds it lacks, for a port open to anyone.

uvicorn closes a keep-alive connection that stays idle after a response, and nothing else: a connection that never
sends a byte, a request head sent one byte a second, a body that never ends, a head of 64 MB (which httptools
gathers before it calls back, stalling the loop), and a client that never reads its response all hold a socket
(and memory) for as long as the client likes; with a descriptor limit of 1,024, a thousand of them shut everybody
out. Here each connection is always under one clock:

    idle     no request in progress: closed after `idle_timeout` (also a new connection that sends nothing)
    head     from the first byte of a request: its head within `header_timeout` and `max_head_bytes`, else 408/431
    body     from the end of the head: the body within `body_timeout`, else 408
    busy     the application answers; a response the client does not read for `write_timeout` is abandoned

and at `max_connections`, a new connection closes the connection idle the longest, or is refused when none is idle.
"""

import asyncio
import contextlib
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_IDLE, _HEAD, _BODY, _BUSY = range(4)
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() discards what is unsent and sends RST
_STATUS = {
    408: b"408 Request Timeout",
    431: b"431 Request Header Fields Too Large",
    503: b"503 Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Limits:
    idle_timeout: float
    header_timeout: float
    body_timeout: float
    write_timeout: float
    max_head_bytes: int
    max_connections: int


class Guard(HttpToolsProtocol):
    limits: ClassVar[Limits]
    idle: ClassVar["OrderedDict[Guard, None]"]  # the connections with no request in progress, longest idle first

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._state = _IDLE
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._refuse(503, b"too many connections")
            return
        self._to_idle()

    def _make_room(self) -> bool:
        """Closes the connection idle the longest; False when there is none to close."""
        if not self.idle:
            return False
        oldest, _ = self.idle.popitem(last=False)
        oldest._close()
        return True

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _to_idle(self) -> None:
        self._state = _IDLE
        self._head_bytes = 0
        self.idle[self] = None
        self._arm(self.limits.idle_timeout)

    def _expired(self) -> None:
        self._timer = None
        if self._state == _IDLE:
            self._close()
        elif self._state in (_HEAD, _BODY) and not (self.cycle and self.cycle.response_started):
            self._refuse(408, b"the request did not arrive in time")
        elif self._state == _BODY:
            self._close()

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:
            self.idle.pop(self, None)
            self._state = _HEAD
            self._arm(self.limits.header_timeout)
        if self._state != _HEAD:
            super().data_received(data)
            return
        # Never more than the head's bound goes to the parser before the head is complete.
        room = self.limits.max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            if self._state == _HEAD and self._head_bytes >= self.limits.max_head_bytes:
                self._refuse(431, b"the request head is too large")
            return
        view = memoryview(data)
        self._head_bytes = self.limits.max_head_bytes
        super().data_received(bytes(view[:room]))
        if self._state == _HEAD:
            self._refuse(431, b"the request head is too large")
        elif not self.transport.is_closing():
            super().data_received(bytes(view[room:]))

    def on_headers_complete(self) -> None:
        self._state = _BODY
        self._arm(self.limits.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._state = _BUSY
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._state == _BUSY and not self.transport.is_closing():
            self._to_idle()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout, self._abandon)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _abandon(self) -> None:
        """The client has not read its response for write_timeout: the response is not worth a socket. Closed with
        a reset (SO_LINGER 0): a plain close would leave up to the kernel's send buffer (4 MB here) to trickle out
        to a client that reads a few KB a second, for minutes."""
        self._write_timer = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.idle.pop(self, None)
        for timer in (self._timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: int, reason: bytes) -> None:
        self.idle.pop(self, None)
        self._state = _BUSY
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 " + _STATUS[status] + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(reason) + reason
            )
            self.transport.close()


def guarded(limits: Limits) -> type[Guard]:
    """The protocol class to give uvicorn (`http=`), bound to these limits."""

    class Bound(Guard):
        pass

    Bound.limits = limits
    Bound.idle = OrderedDict()
    return Bound
