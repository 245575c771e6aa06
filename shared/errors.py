"""The errors muster itself answers with, split by what the caller should do next.

    MusterError                      code, message, data -> one JSON-RPC error object
    ├── RetryLater                   the call did not run; the same call may succeed later (data.retryAfter)
    │   ├── QueueFull                the server's queue is at its bound
    │   ├── UpstreamUnavailable      the remote server cannot be reached right now
    │   └── ServiceUnavailable       muster itself cannot take calls right now (its Valkey is unreachable)
    └── GiveUp                       retrying the same call will not help
        ├── DeadlineExceeded         no outcome before the call's deadline; it did not run or was stopped
        ├── OutcomeUnknown           the call may have run; muster will not run a non-idempotent call twice
        ├── Cancelled                the caller cancelled it
        └── AuthRequired             the user must sign in: to muster again, or to the server (data.loginUrl)

Errors an upstream answers with are not muster errors: they travel to the caller unchanged.
"""

from typing import Any, ClassVar

import orjson

# JSON-RPC 2.0 codes, as the mcp package names them.
from mcp_types import INTERNAL_ERROR as INTERNAL_ERROR
from mcp_types import INVALID_PARAMS as INVALID_PARAMS
from mcp_types import INVALID_REQUEST as INVALID_REQUEST
from mcp_types import METHOD_NOT_FOUND as METHOD_NOT_FOUND
from mcp_types import PARSE_ERROR as PARSE_ERROR

# The handshake protocols' "resource not found"; the mcp package no longer names it (2026-07-28 retired it).
RESOURCE_NOT_FOUND = -32002
# muster's codes, in the implementation-defined server range.
DEADLINE_EXCEEDED = -32001
QUEUE_FULL = -32003
UPSTREAM_UNAVAILABLE = -32004
OUTCOME_UNKNOWN = -32005
SERVICE_UNAVAILABLE = -32006
AUTH_REQUIRED = -32007
CANCELLED = -32800


class MusterError(Exception):
    code: ClassVar[int] = INTERNAL_ERROR

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def body(self) -> bytes:
        """The JSON-RPC error object, ready to splice into a response."""
        return error_body(self.code, self.message, self.data)


class RetryLater(MusterError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, {"retryAfter": retry_after})
        self.retry_after = retry_after


class QueueFull(RetryLater):
    code = QUEUE_FULL


class UpstreamUnavailable(RetryLater):
    code = UPSTREAM_UNAVAILABLE


class ServiceUnavailable(RetryLater):
    code = SERVICE_UNAVAILABLE


class GiveUp(MusterError):
    pass


class DeadlineExceeded(GiveUp):
    code = DEADLINE_EXCEEDED


class OutcomeUnknown(GiveUp):
    code = OUTCOME_UNKNOWN


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


def error_body(code: int, message: str, data: Any = None) -> bytes:
    if data is None:
        return orjson.dumps({"code": code, "message": message})
    return orjson.dumps({"code": code, "message": message, "data": data})
