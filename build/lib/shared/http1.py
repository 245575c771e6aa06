"""A lean HTTP/1.1 keep-alive client for calls to upstream MCP servers.

httpx costs 1.7-4 ms of CPU per request, which is more than the whole budget of a proxied call
(../shared/reference/python-hot-path-costs.md); this client is an asyncio.Protocol around httptools'
parser and costs about 0.05 ms. It does what an MCP upstream needs and no more: one request per
connection at a time, Content-Length request bodies, Content-Length, chunked or close-delimited responses,
server-sent events delivered as they arrive, TLS, and a deadline per request.
"""

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]
OnEvent = Callable[[bytes], bool | None]  # True: that was the last event wanted; end the exchange
LINGER = 5.0  # seconds a POST stream may stay open after its answer before the connection is given up


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


class Timeout(HttpError):
    """The deadline passed before the response was complete."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]  # lower-case names; a repeated header keeps its last value
    body: bytes  # empty for an event stream delivered through on_event
    events: int = 0  # server-sent events delivered
    last_event_id: bytes | None = None  # for resuming the stream (SEP-1699)
    retry_ms: int | None = None  # how long the server asks a client to wait before resuming

    @property
    def content_type(self) -> bytes:
        return self.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()


@dataclass(slots=True)
class _Exchange:
    future: asyncio.Future[Response]
    on_event: OnEvent | None
    streaming: bool = False  # a GET event stream, which may never end by itself
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    sse: "_SSEDecoder | None" = None
    received: bool = False
    headers_done: bool = False


class _SSEDecoder:
    __slots__ = ("buffer", "count", "done", "last_id", "on_event", "retry")

    def __init__(self, on_event: OnEvent) -> None:
        self.buffer = b""
        self.on_event = on_event
        self.count = 0
        self.done = False
        self.last_id: bytes | None = None
        self.retry: int | None = None

    def feed(self, data: bytes) -> None:
        buffer = self.buffer + data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *events, self.buffer = buffer.split(b"\n\n")
        for event in events:
            payload = []
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    payload.append(line[5:].removeprefix(b" "))
                elif line.startswith(b"id:"):
                    self.last_id = line[3:].strip()
                elif line.startswith(b"retry:") and line[6:].strip().isdigit():
                    self.retry = int(line[6:].strip())
            if payload and any(payload):  # an event with empty data only primes the stream for resumption
                self.count += 1
                if self.on_event(b"\n".join(payload)):
                    self.done = True
                    return


class _Connection(asyncio.Protocol):
    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
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
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed response: {exc}"))
            self.close()

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

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.exchange is not None
        self.exchange.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.status = self.parser.get_status_code()
        exchange.headers_done = True
        if exchange.on_event is not None and exchange.status == 200:
            ctype = exchange.headers.get(b"content-type", b"")
            if ctype.startswith(b"text/event-stream"):
                exchange.sse = _SSEDecoder(exchange.on_event)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # the rest of a stream ended early on purpose
            return
        if exchange.sse is None:
            exchange.chunks.append(body)
            return
        if exchange.future.done():  # answered already; the rest of the stream is only read to its end
            return
        exchange.sse.feed(body)
        if exchange.sse.done:
            # The awaited event came: answer now rather than when the server ends the stream. A POST stream
            # ends right after (and the connection is reused); a GET stream may not end at all, so it is closed.
            exchange.future.set_result(self._response(exchange))
            if exchange.streaming:
                self.exchange = None
                self.close()
            else:
                asyncio.get_running_loop().call_later(LINGER, self._linger, exchange)

    def _linger(self, exchange: _Exchange) -> None:
        if self.exchange is exchange:  # the server never ended the stream it had answered on
            self.exchange = None
            self.abort()

    @staticmethod
    def _response(exchange: _Exchange) -> Response:
        response = Response(exchange.status, exchange.headers, b"".join(exchange.chunks))
        sse = exchange.sse
        if sse is not None:
            response.events, response.last_event_id, response.retry_ms = sse.count, sse.last_id, sse.retry
        return response

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
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
    """Keep-alive connections to one origin (scheme, host, port).

    Connections idle longer than `idle_timeout` are dropped before reuse: it should be shorter than the
    server's own keep-alive timeout (uvicorn: 5 s), so that a request rarely meets a connection the server
    is closing.
    """

    def __init__(
        self,
        url: str,
        *,
        idle_timeout: float = 4.0,
        max_idle: int = 64,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
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
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._closed = False

    async def _acquire(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_timeout:
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
        except (OSError, TimeoutError, ssl.SSLError) as exc:
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
    ) -> Response:
        """Send one request and wait for its response.

        `deadline` is a loop.time() value. With `on_event`, a 200 text/event-stream body is decoded and each
        event's data is passed to it as it arrives; the call returns when the stream ends, or as soon as
        `on_event` returns True.
        """
        conn = await self._acquire()
        conn.uses += 1
        loop = asyncio.get_running_loop()
        exchange = _Exchange(loop.create_future(), on_event, method == b"GET")
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
        timer = None
        if deadline is not None:
            timer = loop.call_at(deadline, self._expire, conn, exchange)
        try:
            return await exchange.future
        except BaseException:
            if conn.exchange is exchange:  # cancelled or failed mid-exchange: the connection's state is unknown
                conn.exchange = None
                conn.abort()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    @staticmethod
    def _expire(conn: _Connection, exchange: _Exchange) -> None:
        if not exchange.future.done():
            exchange.future.set_exception(Timeout("deadline passed before the response was complete"))
        conn.abort()

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
