"""The HTTP layer of the ingress on bare ASGI: request heads, bounded bodies, and every response it writes,
JSON or event stream. Nothing outside this module writes an ASGI message.

Starlette would add a request object, a response object and a middleware stack to every call; the MCP
endpoint needs a handful of headers and a body, so it reads them straight from the ASGI scope.
"""

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from services.ingress.callers import Caller

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Iterable[tuple[bytes, bytes]]
Part = bytes | memoryview

JSON = b"application/json"
EVENT_STREAM = b"text/event-stream"
_ACCEPTED: list[Message] = [
    {"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]},
    {"type": "http.response.body", "body": b""},
]
_KEEPALIVE: Message = {"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True}
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class Head:
    """The request line and the headers the ingress reads, looked up once."""

    __slots__ = (
        "accept",
        "content_length",
        "content_type",
        "host",
        "last_event_id",
        "method",
        "origin",
        "protocol",
        "raw",
        "session",
    )

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        self.raw: list[tuple[bytes, bytes]] = scope["headers"]
        self.accept = self.content_type = self.host = b""
        self.origin = self.session = self.protocol = self.last_event_id = None
        self.content_length: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                self.content_type = value
            elif name == b"accept":
                self.accept = value
            elif name == b"mcp-session-id":
                self.session = value
            elif name == b"mcp-protocol-version":
                self.protocol = value
            elif name == b"host":
                self.host = value
            elif name == b"origin":
                self.origin = value
            elif name == b"content-length":
                self.content_length = int(value) if value.isdigit() and len(value) < 19 else -1
            elif name == b"last-event-id":
                self.last_event_id = value

    def text_headers(self) -> dict[str, str]:
        return {name.decode("latin-1"): value.decode("latin-1") for name, value in self.raw}

    def accepts(self, media: bytes) -> bool:
        """The client takes this media type (no Accept header takes anything)."""
        return not self.accept or media in self.accept or b"*/*" in self.accept

    @property
    def json_body(self) -> bool:
        return self.content_type.split(b";", 1)[0].strip().lower() == JSON


class TooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client closed the connection before its request was read."""


async def read_body(receive: Receive, limit: int) -> bytes:
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = first.get("body", b"")
    if not first.get("more_body"):
        if len(body) > limit:
            raise TooLarge
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


# What one ASGI message carries of a large body: the server writes it and waits for the client to take it before
# it is handed the next piece, so a client that reads slowly holds one piece in the socket buffer, not the body.
PIECE = 1 << 20


def _pieces(parts: Iterable[Part]) -> Iterable[Part]:
    for part in parts:
        if len(part) <= PIECE:
            yield part
        else:
            view = memoryview(part)
            for at in range(0, len(part), PIECE):
                yield view[at : at + PIECE]


async def respond(send: Send, status: int, body: bytes, content_type: bytes = JSON, headers: Headers = ()) -> None:
    await respond_parts(send, status, (body,), content_type, headers)


async def respond_parts(
    send: Send, status: int, parts: tuple[Part, ...], content_type: bytes = JSON, headers: Headers = ()
) -> None:
    """A response whose body is `parts` one after another, never joined into one copy."""
    length = sum(len(p) for p in parts)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % length), *headers],
        }
    )
    pieces = [p for p in _pieces(parts) if p]
    for piece in pieces[:-1]:
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": pieces[-1] if pieces else b""})


async def respond_text(send: Send, status: int, text: str, headers: Headers = ()) -> None:
    await respond(send, status, text.encode(), b"text/plain; charset=utf-8", headers)


async def respond_json(send: Send, status: int, value: Any) -> None:
    await respond(send, status, orjson.dumps(value))


def event_parts(data: bytes, event_id: bytes | None = None) -> tuple[bytes, ...]:
    """One server-sent event carrying `data`; a line break in it (whitespace between JSON tokens) starts another
    data line, which the client joins back with a line feed."""
    head = b"event: message\ndata: " if event_id is None else b"id: " + event_id + b"\nevent: message\ndata: "
    if b"\n" in data or b"\r" in data:
        data = b"\ndata: ".join(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"))
    return head, data, b"\n\n"


def event(data: bytes, event_id: bytes | None = None) -> bytes:
    return b"".join(event_parts(data, event_id))


@dataclass(slots=True)
class Exchange:
    """One HTTP request to the MCP endpoint and the response to it. `request_id` is the JSON-RPC id that the
    response answers, as JSON (b"null" where there is none)."""

    head: Head
    receive: Receive
    send: Send
    request_id: bytes

    async def respond(self, status: int, body: bytes, headers: Headers = ()) -> None:
        await respond(self.send, status, body, JSON, headers)

    async def respond_parts(self, status: int, parts: tuple[Part, ...], headers: Headers = ()) -> None:
        await respond_parts(self.send, status, parts, JSON, headers)

    async def respond_text(self, status: int, text: str, headers: Headers = ()) -> None:
        await respond_text(self.send, status, text, headers)

    async def accepted(self) -> None:
        for message in _ACCEPTED:
            await self.send(message)

    async def start_events(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", EVENT_STREAM),
                    (b"cache-control", b"no-cache, no-transform"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )

    async def prime(self, event_id: bytes, retry_ms: int) -> None:
        """An event with an id and no data (SEP-1699): from here on, the client can resume the stream."""
        body = b"id: " + event_id + b"\nretry: %d\ndata:\n\n" % retry_ms
        await self.send({"type": "http.response.body", "body": body, "more_body": True})

    async def event(self, data: bytes, *, more: bool = True, event_id: bytes | None = None) -> None:
        pieces = list(_pieces(event_parts(data, event_id)))
        for piece in pieces[:-1]:
            await self.send({"type": "http.response.body", "body": piece, "more_body": True})
        await self.send({"type": "http.response.body", "body": pieces[-1], "more_body": more})

    async def keepalive(self) -> None:
        """A comment line on an idle event stream, so that proxies keep it open."""
        await self.send(_KEEPALIVE)

    async def end_events(self) -> None:
        await self.send(_END)

    def disconnected(self) -> "asyncio.Future[Message]":
        """Completes when the client goes away (the request body must have been read)."""
        return asyncio.ensure_future(self.receive())


@dataclass(slots=True)
class RequestContext(Exchange):
    """A JSON-RPC request on its exchange, and who sent it: what every method handler takes."""

    caller: Caller
    login: bytes = b""  # the caller's login (Call.login): whose upstream tokens its calls run with; b"" without auth
    routed: bool = False  # it went to an upstream's queue, and its telemetry is the forwarder's (telemetry.py)


class Allow:
    """Host or Origin values that are let in: exact values, `value:*` for any port, or `*` for all."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.any = False
        exact, wildcard = [], []
        for p in patterns:
            if p == "*":
                self.any = True
            elif p.endswith(":*"):
                wildcard.append(re.escape(p[:-2]) + r":\d+")
            else:
                exact.append(re.escape(p))
        self.pattern = re.compile(("(" + "|".join(exact + wildcard) + ")$").encode(), re.IGNORECASE)

    def __call__(self, value: bytes) -> bool:
        return self.any or bool(self.pattern.match(value))
