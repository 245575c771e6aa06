"""A lean HTTP/1.1 keep-alive client for calls to upstream MCP servers.

httpx costs 1.7-4 ms of CPU per request, which is more than the whole budget of a proxied call
(../shared/reference/python-hot-path-costs.md); this client is an asyncio.Protocol around httptools' parser
and costs about 0.05 ms. It does what an MCP upstream needs and no more: one request per connection at a time,
Content-Length request bodies, Content-Length, chunked (with trailers) or close-delimited responses, 1xx interim
responses skipped, server-sent events delivered as they arrive, TLS, and a library's bounds: limits on every part
of a response, checked as its bytes arrive so nothing is buffered past them, and timeouts for connecting, for the
first byte, for silence while reading, and a deadline per request.

Errors, split by what the caller can conclude:

    HttpError                   the exchange failed below HTTP
    ├── ConnectFailed           no connection was made: the request was never sent
    │   └── ConnectTimeout      ... within connect_timeout (also a Timeout)
    ├── ConnectionLost          the connection broke before the response was complete
    ├── MalformedResponse       the bytes that came back are not an HTTP/1.1 response
    ├── ResponseTooLarge        the response passed a limit (`limit` names it, `value` is its bound)
    └── Timeout                 time ran out before the response was complete
        ├── ConnectTimeout
        ├── FirstByteTimeout    no response byte within first_byte_timeout of the request being written
        ├── IdleTimeout         no byte for idle_timeout while the response was being read
        └── DeadlineTimeout     the request's deadline passed
"""

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

from shared._sse import EventTooLarge, OnEvent, SSEDecoder

__all__ = [
    "ConnectFailed",
    "ConnectTimeout",
    "ConnectionLost",
    "DeadlineTimeout",
    "FirstByteTimeout",
    "Headers",
    "HttpError",
    "IdleTimeout",
    "MalformedResponse",
    "OnEvent",
    "OnHead",
    "Pool",
    "Response",
    "ResponseTooLarge",
    "Timeout",
]

Headers = list[tuple[bytes, bytes]]
# Called once the final response's head is in: (status, lower-case headers). A long-lived event stream is
# established then, well before the request returns.
OnHead = Callable[[int, dict[bytes, bytes]], None]
LINGER = 5.0  # seconds a POST stream may stay open after its answer before the connection is given up
_SLACK = 0.002  # uvloop's timers have millisecond resolution and may fire that much early


class HttpError(Exception):
    """The exchange failed below HTTP: no response, or a broken one."""


class ConnectFailed(HttpError):
    """No connection could be made: the request was never sent."""


class ConnectionLost(HttpError):
    """The connection broke before the response was complete.

    `sent` tells whether the request was written at all (if not, it certainly did not reach the server);
    `received` whether any response byte arrived; `reused` whether the connection had served a request before.
    """

    def __init__(self, message: str, *, reused: bool, received: bool, sent: bool = True) -> None:
        super().__init__(message)
        self.reused = reused
        self.received = received
        self.sent = sent


class MalformedResponse(HttpError):
    """What came back does not parse as an HTTP/1.1 response."""


class ResponseTooLarge(HttpError):
    """A part of the response passed one of the pool's limits; the connection was dropped at that point."""

    def __init__(self, limit: str, value: int, what: str) -> None:
        super().__init__(f"response {what} exceeds {limit}={value}")
        self.limit = limit  # the Pool argument that bounds it
        self.value = value


class Timeout(HttpError):
    """Time ran out before the response was complete; the subclass says which timeout."""


class ConnectTimeout(ConnectFailed, Timeout):
    pass


class FirstByteTimeout(Timeout):
    pass


class IdleTimeout(Timeout):
    pass


class DeadlineTimeout(Timeout):
    pass


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]  # lower-case names; a repeated header keeps its last value
    body: bytes  # empty for an event stream delivered through on_event
    events: int = 0  # server-sent events delivered
    last_event_id: bytes | None = None  # for resuming the stream (SEP-1699)
    retry_ms: int | None = None  # how long the server asks a client to wait before resuming
    trailers: dict[bytes, bytes] | None = None  # the trailer fields of a chunked body, lower-case names

    @property
    def content_type(self) -> bytes:
        return self.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()


@dataclass(slots=True)
class _Exchange:
    future: asyncio.Future[Response]
    on_event: OnEvent | None
    streaming: bool  # a GET event stream, which may never end by itself
    deadline: float | None
    on_head: OnHead | None = None
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    trailers: dict[bytes, bytes] | None = None
    chunks: list[bytes] = field(default_factory=list)
    sse: SSEDecoder | None = None
    received: bool = False
    headers_done: bool = False  # of the final response, after any 1xx
    head_bytes: int = 0  # bytes fed before the final response's head was complete
    status_bytes: int = 0
    header_count: int = 0
    size: int = 0  # body bytes so far
    gap: int = 0  # bytes read since the last body byte: chunk framing and trailers
    last_read: float = 0.0  # when the last byte came, or the request was written if none has
    timer: asyncio.TimerHandle | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self.uses = 0
        self.idle_since = time.monotonic()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: the connection is no longer trustworthy
            self.close()
            return
        exchange.received = True
        exchange.last_read = self.loop.time()
        try:
            if exchange.headers_done:
                exchange.gap += len(data)
                self.parser.feed_data(data)
                if exchange.gap > self.pool.max_head_bytes and self.exchange is exchange:
                    raise ResponseTooLarge("max_head_bytes", self.pool.max_head_bytes, "trailer section")
            else:
                self._feed_head(exchange, data)
        except httptools.HttpParserCallbackError as exc:  # one of the callbacks below raised
            error = exc.__context__
            self._fail(error if isinstance(error, Exception) else MalformedResponse(f"malformed response: {exc}"))
            self.abort()
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(MalformedResponse(f"malformed response: {exc or type(exc).__name__}"))
            self.abort()
        except ResponseTooLarge as exc:
            self._fail(exc)
            self.abort()

    def _feed_head(self, exchange: _Exchange, data: bytes) -> None:
        # httptools gathers a header's name and value before it calls back: it is never fed more than the head
        # limit allows, so that a 64 MB header costs 64 KiB, not 64 MB.
        limit = self.pool.max_head_bytes
        room = limit - exchange.head_bytes
        if len(data) <= room:
            exchange.head_bytes += len(data)
            self.parser.feed_data(data)
            if exchange.head_bytes >= limit and not exchange.headers_done and self.exchange is exchange:
                raise ResponseTooLarge("max_head_bytes", limit, "head")
            return
        view = memoryview(data)
        exchange.head_bytes = limit
        self.parser.feed_data(view[:room])
        if self.exchange is not exchange:  # it ended within the head's bytes
            return
        if not exchange.headers_done:
            raise ResponseTooLarge("max_head_bytes", limit, "head")
        self.parser.feed_data(view[room:])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        if exchange is None or exchange.future.done():
            self.exchange = None
            return
        if (
            exchange.headers_done
            and b"content-length" not in exchange.headers
            and (b"chunked" not in exchange.headers.get(b"transfer-encoding", b""))
        ):
            self.on_message_complete()  # a body delimited by the end of the connection
            return
        self._fail(
            ConnectionLost(
                "connection closed before the response was complete", reused=self.uses > 1, received=exchange.received
            )
        )

    # httptools callbacks; an exception raised here stops the parser and reaches data_received
    def on_status(self, status: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.status_bytes += len(status)
        if exchange.status_bytes + 13 > self.pool.max_status_line:  # 13: "HTTP/1.1 200 "
            raise ResponseTooLarge("max_status_line", self.pool.max_status_line, "status line")

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.header_count += 1
        if exchange.header_count > self.pool.max_headers:
            what = "trailer fields" if exchange.headers_done else "header fields"
            raise ResponseTooLarge("max_headers", self.pool.max_headers, what)
        if exchange.headers_done:  # a trailer field, after the last chunk
            if exchange.trailers is None:
                exchange.trailers = {}
            exchange.trailers[name.lower()] = value
        else:
            exchange.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        status = self.parser.get_status_code()
        exchange.header_count = 0
        if status < 200:  # 100 Continue, 103 Early Hints: interim, the response itself follows
            exchange.headers.clear()
            exchange.status_bytes = 0
            return
        exchange.status = status
        exchange.headers_done = True
        if exchange.on_head is not None:
            exchange.on_head(status, exchange.headers)
        pool = self.pool
        if exchange.on_event is not None and status == 200:
            ctype = exchange.headers.get(b"content-type", b"")
            if ctype.startswith(b"text/event-stream"):
                exchange.sse = SSEDecoder(exchange.on_event, pool.max_event_bytes)
                return
        length = exchange.headers.get(b"content-length")
        if length is not None and int(length) > pool.max_body_bytes:
            raise ResponseTooLarge("max_body_bytes", pool.max_body_bytes, "body")

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # the rest of a stream ended early on purpose
            return
        exchange.gap = 0
        sse = exchange.sse
        if sse is None:
            exchange.size += len(body)
            if exchange.size > self.pool.max_body_bytes:
                raise ResponseTooLarge("max_body_bytes", self.pool.max_body_bytes, "body")
            exchange.chunks.append(body)
            return
        if exchange.future.done():  # answered already; the rest of the stream is only read to its end
            return
        try:
            sse.feed(body)
        except EventTooLarge:
            raise ResponseTooLarge("max_event_bytes", self.pool.max_event_bytes, "event") from None
        if sse.done:
            # The awaited event came: answer now rather than when the server ends the stream. A POST stream
            # ends right after (and the connection is reused); a GET stream may not end at all, so it is closed.
            exchange.future.set_result(self._response(exchange))
            if exchange.streaming:
                self.exchange = None
                self.close()
            else:
                self.loop.call_later(LINGER, self._linger, exchange)

    def _linger(self, exchange: _Exchange) -> None:
        if self.exchange is exchange:  # the server never ended the stream it had answered on
            self.exchange = None
            self.abort()

    @staticmethod
    def _response(exchange: _Exchange) -> Response:
        response = Response(exchange.status, exchange.headers, b"".join(exchange.chunks))
        response.trailers = exchange.trailers
        sse = exchange.sse
        if sse is not None:
            response.events, response.last_event_id, response.retry_ms = sse.count, sse.last_id, sse.retry
        return response

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None or not exchange.headers_done:  # none, or the end of a 1xx
            return
        self.exchange = None
        keep = not self.closed and self.parser.should_keep_alive()
        if not exchange.future.done():
            exchange.future.set_result(self._response(exchange))
        if keep:
            self.idle_since = time.monotonic()
            self.pool._release(self)
        else:
            self.close()

    def _fail(self, exc: Exception) -> None:
        exchange = self.exchange
        self.exchange = None
        if exchange is not None and not exchange.future.done():
            exchange.future.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections to one origin (scheme, host, port), with the bounds every response is held to.

    Connections idle longer than `keepalive_expiry` are dropped before reuse: it should be shorter than the
    server's own keep-alive timeout (uvicorn: 5 s), so that a request rarely meets a connection the server
    is closing.

    Limits: `max_status_line`, `max_head_bytes` (status line and header fields, 1xx responses included; also the
    bound of a chunked body's trailer section), `max_headers` (fields in the head, and in the trailers),
    `max_body_bytes` (a body that is not an event stream) and `max_event_bytes` (one server-sent event in
    progress; by default the body limit). Passing one fails the request with ResponseTooLarge.

    Timeouts, in seconds, None for none: `connect_timeout`; `first_byte_timeout` from writing the request to the
    first response byte (a JSON response to a long tool call arrives only when the call is done, so leave it
    unset there and rely on the request's deadline); `idle_timeout`, no byte at all while a response is read (an
    event stream whose server sends keep-alive comments never trips it).
    """

    def __init__(
        self,
        url: str,
        *,
        keepalive_expiry: float = 4.0,
        max_idle: int = 64,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        first_byte_timeout: float | None = None,
        idle_timeout: float | None = 300.0,
        max_status_line: int = 8 * 1024,
        max_head_bytes: int = 64 * 1024,
        max_headers: int = 100,
        max_body_bytes: int = 64 * 1024 * 1024,
        max_event_bytes: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        self.authority = (parts.netloc.rsplit("@", 1)[-1] if default_port else f"{self.host}:{self.port}").encode()
        self.path = (parts.path or "/").encode() + (b"?" + parts.query.encode() if parts.query else b"")
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        self.keepalive_expiry = keepalive_expiry
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.max_status_line = max_status_line
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_body_bytes if max_event_bytes is None else max_event_bytes
        # the first look at a request's timeouts: its first-byte bound, or when the idle clock may have started
        self._first_wait = idle_timeout if first_byte_timeout is None else first_byte_timeout
        self._idle: list[_Connection] = []
        self._closed = False

    async def _acquire(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_expiry:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(
                f"cannot connect to {self.host}:{self.port} within connect_timeout={self.connect_timeout}s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        return proto

    def _release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            conn.close()
        else:
            self._idle.append(conn)

    async def request(
        self,
        method: bytes,
        headers: Headers,
        body: bytes = b"",
        *,
        path: bytes | None = None,
        deadline: float | None = None,
        on_event: OnEvent | None = None,
        on_head: OnHead | None = None,
    ) -> Response:
        """Send one request and wait for its response.

        `deadline` is a loop.time() value. With `on_event`, a 200 text/event-stream body is decoded and each
        event's data is passed to it as it arrives; the call returns when the stream ends, or as soon as
        `on_event` returns True. An exception `on_event` raises ends the exchange and reaches the caller.
        `on_head` is called when the response's head has arrived.
        """
        conn = await self._acquire()
        conn.uses += 1
        loop = conn.loop
        exchange = _Exchange(loop.create_future(), on_event, method == b"GET", deadline, on_head)
        conn.exchange = exchange
        head = [method, b" ", path or self.path, b" HTTP/1.1\r\nHost: ", self.authority, b"\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head += (b"Content-Length: ", b"%d" % len(body), b"\r\n\r\n", body)
        assert conn.transport is not None
        if conn.closed or conn.transport.is_closing():
            conn.exchange = None
            raise ConnectionLost(
                "connection closed before the request was sent", reused=True, received=False, sent=False
            )
        conn.transport.write(b"".join(head))
        exchange.last_read = now = loop.time()
        due = deadline
        if self._first_wait is not None and (due is None or now + self._first_wait < due):
            due = now + self._first_wait
        if due is not None:
            exchange.timer = loop.call_at(due, self._tick, conn, exchange)
        try:
            return await exchange.future
        except BaseException:
            if conn.exchange is exchange:  # cancelled or failed mid-exchange: the connection's state is unknown
                conn.exchange = None
                conn.abort()
            raise
        finally:
            if exchange.timer is not None:
                exchange.timer.cancel()

    def _due(self, exchange: _Exchange, now: float) -> float | None:
        """When the exchange's timeouts must next be looked at, if ever."""
        due = exchange.deadline
        if exchange.received:
            check = None if self.idle_timeout is None else exchange.last_read + self.idle_timeout
        elif self.first_byte_timeout is not None:
            check = exchange.last_read + self.first_byte_timeout
        else:  # no first-byte bound, but the idle clock must start once a byte has come
            check = None if self.idle_timeout is None else now + self.idle_timeout
        if check is not None and (due is None or check < due):
            return check
        return due

    def _tick(self, conn: _Connection, exchange: _Exchange) -> None:
        exchange.timer = None
        if exchange.future.done():
            return
        now = conn.loop.time() + _SLACK
        error: Timeout
        if exchange.deadline is not None and now >= exchange.deadline:
            error = DeadlineTimeout("deadline passed before the response was complete")
        elif (
            not exchange.received
            and self.first_byte_timeout is not None
            and now >= exchange.last_read + self.first_byte_timeout
        ):
            error = FirstByteTimeout(
                f"no response byte within first_byte_timeout={self.first_byte_timeout}s of sending the request"
            )
        elif exchange.received and self.idle_timeout is not None and now >= exchange.last_read + self.idle_timeout:
            error = IdleTimeout(f"no byte for idle_timeout={self.idle_timeout}s while reading the response")
        else:
            due = self._due(exchange, now)
            if due is not None:
                exchange.timer = conn.loop.call_at(due, self._tick, conn, exchange)
            return
        exchange.future.set_exception(error)
        conn.abort()

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
