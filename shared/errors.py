"""Every JSON-RPC error muster itself answers with, split by what the caller should do next. An error is made by
raising (or building) one of these classes; a third-party failure is translated into one at the boundary where it
happens (`raise ... from exc`). Each code has one meaning, and a RetryLater always says when (`data.retryAfter`,
seconds, from the service's settings).

    MusterError                      code, message, data -> one JSON-RPC error object; `status` for HTTP
    ├── RetryLater                   the call did not run; the same call may succeed later (data.retryAfter)
    │   ├── AtCapacity     -32003    muster is at one of its bounds: a server's queue, a replica's calls, sessions
    │   │   └── QueueFull            ... a queue or a replica's calls in flight
    │   ├── UpstreamUnavailable -32004  the remote server cannot be reached (or refuses work) right now
    │   └── ServiceUnavailable -32006   muster cannot reach (or write to) its Valkey right now
    └── GiveUp                       retrying the same request will not help
        ├── RequestError             the request itself is wrong; `status` is the HTTP status it is answered with
        │   ├── ParseError -32700    not JSON
        │   ├── InvalidRequest -32600  not a request muster takes (JSON-RPC or MCP transport rules)
        │   ├── MethodNotFound -32601
        │   ├── InvalidParams -32602
        │   ├── ResourceNotFound -32002  (handshake-era protocols; the mcp package retired the name)
        │   ├── HeaderMismatch -32020    2026-07-28: the routing headers disagree with the envelope
        │   └── UnsupportedProtocolVersion -32022  2026-07-28: a protocol version muster does not speak
        ├── DeadlineExceeded -32001  no outcome before the call's deadline; it did not run or was stopped
        ├── OutcomeUnknown -32005    the call may have run; muster will not run a non-idempotent call twice
        ├── ResultTooLarge -32008    the upstream answered with more than muster carries; the call may have run
        ├── Cancelled -32800         the caller cancelled it
        ├── AuthRequired -32007      the user must sign in: to muster again, or to the server (data.loginUrl)
        └── InternalError -32603     muster failed at something it should not have

Errors an upstream answers with are not muster errors: they travel to the caller unchanged, byte for byte.
"""

import json  # noqa: TID251  # only for what orjson cannot write: strings with lone surrogates
from typing import Any, ClassVar

import orjson
from mcp_types import HEADER_MISMATCH, REQUEST_TIMEOUT, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types import INTERNAL_ERROR as INTERNAL_ERROR
from mcp_types import INVALID_PARAMS as INVALID_PARAMS
from mcp_types import INVALID_REQUEST as INVALID_REQUEST
from mcp_types import METHOD_NOT_FOUND as METHOD_NOT_FOUND
from mcp_types import PARSE_ERROR as PARSE_ERROR

# The handshake protocols' "resource not found"; the mcp package no longer names it (2026-07-28 retired it).
RESOURCE_NOT_FOUND = -32002
# muster's codes, in the implementation-defined server range; -32001 is also what the mcp package calls a
# request that timed out, which is what it means here.
DEADLINE_EXCEEDED = REQUEST_TIMEOUT
QUEUE_FULL = -32003
UPSTREAM_UNAVAILABLE = -32004
OUTCOME_UNKNOWN = -32005
SERVICE_UNAVAILABLE = -32006
AUTH_REQUIRED = -32007
RESULT_TOO_LARGE = -32008
# The mcp package's REQUEST_CANCELLED (mcp.server.streamable_http), written out: importing that module imports the
# whole `mcp` package, half a second of CPU at every worker's and discovery's start (tests/shared/test_errors.py
# checks that the two agree).
CANCELLED = -32800


class MusterError(Exception):
    code: ClassVar[int] = INTERNAL_ERROR
    default_status: ClassVar[int] = 200  # JSON-RPC errors travel in a 200 response unless the transport says not

    def __init__(self, message: str, data: dict[str, Any] | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        self.status = self.default_status if status is None else status

    def body(self) -> bytes:
        """The JSON-RPC error object, ready to splice into a response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        try:
            return orjson.dumps(error)
        except TypeError:  # a lone surrogate the client sent (JSON allows "\ud800"; UTF-8 has no such character)
            return json.dumps(error, ensure_ascii=True, separators=(",", ":")).encode()

    def response(self, request_id: bytes) -> bytes:
        """The whole JSON-RPC response; `request_id` as JSON bytes (b"null" when there is none)."""
        return b'{"jsonrpc":"2.0","id":' + request_id + b',"error":' + self.body() + b"}"


class RetryLater(MusterError):
    def __init__(self, message: str, retry_after: float, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, {**(data or {}), "retryAfter": retry_after})
        self.retry_after = retry_after

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The same hint for HTTP clients and load balancers (whole seconds, at least one)."""
        return [(b"retry-after", b"%d" % max(1, round(self.retry_after)))]


class AtCapacity(RetryLater):
    code = QUEUE_FULL


class QueueFull(AtCapacity):
    pass


class UpstreamUnavailable(RetryLater):
    code = UPSTREAM_UNAVAILABLE


class ServiceUnavailable(RetryLater):
    code = SERVICE_UNAVAILABLE
    default_status = 503


class GiveUp(MusterError):
    pass


class RequestError(GiveUp):
    default_status = 400


class ParseError(RequestError):
    code = PARSE_ERROR


class InvalidRequest(RequestError):
    code = INVALID_REQUEST


class MethodNotFound(RequestError):
    code = METHOD_NOT_FOUND
    default_status = 200


class InvalidParams(RequestError):
    code = INVALID_PARAMS
    default_status = 200


class ResourceNotFound(RequestError):
    code = RESOURCE_NOT_FOUND
    default_status = 200


class HeaderMismatch(RequestError):
    code = HEADER_MISMATCH


class UnsupportedProtocolVersion(RequestError):
    code = UNSUPPORTED_PROTOCOL_VERSION


class DeadlineExceeded(GiveUp):
    code = DEADLINE_EXCEEDED


class OutcomeUnknown(GiveUp):
    code = OUTCOME_UNKNOWN


class ResultTooLarge(GiveUp):
    code = RESULT_TOO_LARGE


class Cancelled(GiveUp):
    code = CANCELLED


class AuthRequired(GiveUp):
    """The call needs the user's credential and muster has none that works: the user signs in to muster again, or
    (per-server OAuth) opens `login_url` once; the same call then succeeds."""

    code = AUTH_REQUIRED

    def __init__(self, message: str, server: str, login_url: str | None = None) -> None:
        data: dict[str, Any] = {"server": server}
        if login_url is not None:
            data["loginUrl"] = login_url
        super().__init__(message, data)


class InternalError(GiveUp):
    code = INTERNAL_ERROR
