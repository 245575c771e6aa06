"""An MCP session with one upstream server over Streamable HTTP, on the lean HTTP client.

One session serves many concurrent calls (one HTTP request each). Bodies are built and split as bytes:
the caller hands over the params it received and gets back the result or error object as JSON bytes,
so nothing is validated or rebuilt on the way through.

A session is a header, not a connection: several UpstreamSession objects (in several processes) may speak in one
upstream session, the first opening it with initialize and the others adopting its id.
"""

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shared import rawjson
from shared.http1 import Headers, HttpError, OnEvent, OnHead, Pool, Response
from shared.protocol import HANDSHAKE_VERSIONS, LATEST_HANDSHAKE, MUSTER_VERSION
from shared.rawjson import Document, Malformed

logger = logging.getLogger(__name__)

CLIENT_INFO = {"name": "muster", "version": MUSTER_VERSION}
# What muster relays for the agents behind it; an agent that lacks one gets the request answered with an error.
CLIENT_CAPABILITIES = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": True}}

_ACCEPT = (b"Accept", b"application/json, text/event-stream")
MAX_RESUMES = 20
_JSON = (b"Content-Type", b"application/json")

# Called with each message the server sends during a call that is not the call's response:
# (parsed message, its bytes as received).
OnMessage = Callable[[dict[str, Any], bytes], None]


def wire_headers(headers: Mapping[str, str] | None) -> Headers:
    """An MCPServer's spec.headers as the headers sent with every request to that server."""
    return [(name.encode(), value.encode()) for name, value in (headers or {}).items()]


class UpstreamFailure(Exception):
    """The upstream answered, but not with a JSON-RPC response."""


class SessionLost(UpstreamFailure):
    """The upstream no longer knows the session (HTTP 404, or 400 naming the session as server-everything and the
    TypeScript SDK answer): open a new one and send again."""


class StatusError(UpstreamFailure):
    def __init__(self, status: int, body: bytes, retry_after: float | None) -> None:
        text = body[:200].decode("utf-8", "replace").strip()
        super().__init__(f"upstream answered HTTP {status}" + (f": {text}" if text else ""))
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Outcome:
    error: bool  # the upstream answered with a JSON-RPC error
    body: bytes  # the result object, or the error object


def _retrieve(task: "asyncio.Task[None]") -> None:
    # every caller may have given up waiting; the failure is theirs to see, not the event loop's to log
    if not task.cancelled():
        task.exception()


def _message(data: bytes) -> Document | None:
    """A JSON-RPC message the upstream sent as an event; None for anything else, which is dropped."""
    try:
        message = Document.parse(data)
    except Malformed:
        logger.warning("upstream sent an event that is not JSON; dropped")
        return None
    return message if isinstance(message.value, dict) else None


def _retry_after(response: Response) -> float | None:
    value = response.headers.get(b"retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None


class UpstreamSession:
    def __init__(
        self,
        pool: Pool,
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        capabilities: dict[str, Any] | None = None,
        on_open: Callable[[bool], None] | None = None,
    ) -> None:
        self.pool = pool
        self.on_open = on_open  # told of every handshake that succeeded: True when it opened the session again
        self._opened = False
        self.static_headers: Headers = list(headers)
        self.capabilities = CLIENT_CAPABILITIES if capabilities is None else capabilities
        self.session_id: bytes | None = None
        self.protocol = LATEST_HANDSHAKE.encode()
        self.initialize_result: dict[str, Any] | None = None
        self._ids = itertools.count(1)
        self._opening: asyncio.Task[None] | None = None
        self._headers: Headers = []
        self._authorization: bytes | None = None
        self._rebuild_headers()

    def _rebuild_headers(self) -> None:
        headers = [_ACCEPT, _JSON, (b"MCP-Protocol-Version", self.protocol), *self.static_headers]
        if self._authorization is not None:
            headers.append((b"Authorization", self._authorization))
        if self.session_id:
            headers.append((b"Mcp-Session-Id", self.session_id))
        self._headers = headers

    def authorize(self, value: bytes | None) -> None:
        """The Authorization header of the requests that follow: set per call, since a user's token is refreshed
        while the session lives on (the header list is rebuilt only when the value changed)."""
        if value != self._authorization:
            self._authorization = value
            self._rebuild_headers()

    @property
    def authorization(self) -> bytes | None:
        return self._authorization

    @property
    def is_open(self) -> bool:
        return self.initialize_result is not None

    def adopt(self, session_id: bytes, protocol: bytes) -> None:
        """Speak in a session opened elsewhere (by another worker): no handshake, the id and version are known."""
        self.session_id = session_id
        self.protocol = protocol
        self._rebuild_headers()
        self.initialize_result = {}

    async def ensure_open(self, deadline: float | None = None) -> None:
        if self.initialize_result is not None:
            return
        # Single flight: concurrent callers wait for the same handshake, which runs as a task of its own, so
        # that a caller who is cancelled (its call was) does not cancel the handshake for the others.
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(self._open(deadline))
            self._opening.add_done_callback(_retrieve)
        await asyncio.shield(self._opening)

    async def _open(self, deadline: float | None) -> None:
        self.session_id = None
        self.protocol = LATEST_HANDSHAKE.encode()
        self._rebuild_headers()
        params = orjson.dumps(
            {"protocolVersion": LATEST_HANDSHAKE, "capabilities": self.capabilities, "clientInfo": CLIENT_INFO}
        )
        response, outcome = await self._exchange(b"initialize", params, deadline, None)
        if outcome.error:
            raise UpstreamFailure(f"initialize failed: {outcome.body.decode('utf-8', 'replace')}")
        result = rawjson.loads(outcome.body)
        version = result.get("protocolVersion")
        if version not in HANDSHAKE_VERSIONS:
            raise UpstreamFailure(f"upstream speaks protocol version {version!r}, which muster does not")
        self.session_id = response.headers.get(b"mcp-session-id")
        self.protocol = version.encode()
        self._rebuild_headers()
        await self.notify(b"notifications/initialized", b"{}", deadline)
        self.initialize_result = result
        if self.on_open is not None:
            self.on_open(self._opened)
        self._opened = True

    def reset(self) -> None:
        """Forget the session, so that the next call opens a new one."""
        self.initialize_result = None

    def next_id(self) -> int:
        return next(self._ids)

    async def request(
        self,
        method: bytes,
        params: bytes,
        deadline: float | None = None,
        on_message: OnMessage | None = None,
        *,
        request_id: int | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> Outcome:
        """Send one request in the open session and return its outcome; `headers` go with this request only."""
        _, outcome = await self._exchange(method, params, deadline, on_message, request_id, headers)
        return outcome

    async def _exchange(
        self,
        method: bytes,
        params: bytes,
        deadline: float | None,
        on_message: OnMessage | None,
        request_id: int | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> tuple[Response, Outcome]:
        if request_id is None:
            request_id = next(self._ids)
        body = b'{"jsonrpc":"2.0","id":%d,"method":"%s","params":%s}' % (request_id, method, params)
        final: list[Document] = []

        def on_event(data: bytes) -> bool:
            message = _message(data)
            if message is None:
                return False
            if "method" in message.value:
                if on_message is not None:
                    on_message(message.value, data)
            elif message.value.get("id") == request_id:
                final.append(message)
                return True
            return False

        sent = [*self._headers, *headers] if headers else self._headers
        response = await self.pool.request(b"POST", sent, body, deadline=deadline, on_event=on_event)
        resumed = 0
        while not final and response.status == 200 and response.last_event_id and resumed < MAX_RESUMES:
            resumed += 1
            response = await self._resume(response, deadline, on_event)
        return response, self._outcome(response, final)

    async def _resume(self, response: Response, deadline: float | None, on_event: OnEvent) -> Response:
        """SEP-1699: the server ended the stream before answering; poll for the rest where it left off."""
        assert response.last_event_id is not None
        await asyncio.sleep(min(response.retry_ms or 100, 5000) / 1000)
        headers = [(b"Accept", b"text/event-stream"), *self._headers[1:], (b"Last-Event-ID", response.last_event_id)]
        resumed = await self.pool.request(b"GET", headers, deadline=deadline, on_event=on_event)
        resumed.last_event_id = resumed.last_event_id or response.last_event_id
        return resumed

    def lost(self, response: Response) -> bool:
        """Whether the response says the upstream no longer knows this session; if so, the session is reset."""
        if self.session_id is None or response.status not in (400, 404):
            return False
        if response.status == 400 and b"session" not in response.body.lower():
            return False  # a 400 about something else: the request's fault, not the session's
        self.reset()
        return True

    def _check(self, response: Response, accepted: tuple[int, ...]) -> None:
        if self.lost(response):
            raise SessionLost(f"upstream no longer knows the session (HTTP {response.status})")
        if response.status not in accepted:
            raise StatusError(response.status, response.body, _retry_after(response))

    def _outcome(self, response: Response, final: list[Document]) -> Outcome:
        """The request's outcome from the response: its event stream's answer, or its JSON body. The result or
        error travels on as the bytes the upstream sent (shared/rawjson.py)."""
        self._check(response, (200,))
        if response.content_type == b"application/json":
            try:
                message = Document.parse(response.body)
            except Malformed as exc:
                raise UpstreamFailure("upstream answered with a body that is not JSON") from exc
            if isinstance(message.value, dict):
                final.append(message)
        if not final:
            raise UpstreamFailure("upstream closed the response without answering the request")
        answer = final[-1]
        error = answer.member("error")
        if error is not None:
            return Outcome(True, error)
        result = answer.member("result")
        if result is None:
            raise UpstreamFailure("upstream answered with neither result nor error")
        return Outcome(False, result)

    async def listen(
        self, on_message: OnMessage, *, on_head: OnHead | None = None, last_event_id: bytes | None = None
    ) -> Response:
        """Holds the session's GET stream open, passing on each message, until the server ends the stream.

        Raises SessionLost when the upstream no longer knows the session; any other status is the caller's to read
        (405: the server offers no GET stream). `last_event_id` resumes a stream that ended (SEP-1699).
        """

        def on_event(data: bytes) -> bool:
            message = _message(data)
            if message is not None and "method" in message.value:
                on_message(message.value, data)
            return False

        headers = [(b"Accept", b"text/event-stream"), *self._headers[1:]]
        if last_event_id:
            headers.append((b"Last-Event-ID", last_event_id))
        response = await self.pool.request(b"GET", headers, on_event=on_event, on_head=on_head)
        if self.lost(response):
            raise SessionLost(f"upstream no longer knows the session (HTTP {response.status} on its GET stream)")
        return response

    async def notify(self, method: bytes, params: bytes, deadline: float | None = None) -> None:
        body = b'{"jsonrpc":"2.0","method":"%s","params":%s}' % (method, params)
        response = await self.pool.request(b"POST", self._headers, body, deadline=deadline)
        self._check(response, (200, 202, 204))

    async def respond(self, request_id: Any, body: bytes, deadline: float | None = None) -> None:
        """Answer a request the upstream sent; `body` is b'"result":{...}' or b'"error":{...}'."""
        raw_id = (
            request_id if isinstance(request_id, bytes) else orjson.dumps(request_id)
        )  # bytes: as the server sent it
        message = b'{"jsonrpc":"2.0","id":%s,%s}' % (raw_id, body)
        response = await self.pool.request(b"POST", self._headers, message, deadline=deadline)
        self._check(response, (200, 202, 204))

    async def close(self) -> None:
        """Ends the session at the upstream (DELETE), as politely as it can: a failure is only logged."""
        if self.session_id is not None:
            try:
                await self.pool.request(b"DELETE", self._headers, deadline=asyncio.get_running_loop().time() + 2)
            except (HttpError, OSError) as exc:  # a server that is gone has forgotten the session too
                logger.debug("closing upstream session failed: %s", exc)
        self.session_id = None
        self.initialize_result = None
