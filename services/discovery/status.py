"""A server's health as discovery sees it, and how it reads in the MCPServer's status subresource.

Conditions (each with reason and message, lastTransitionTime kept while the condition's status holds):
    Ready               True when the server is connected, listed and its tools are exposed
    HandshakeSucceeded  True when the MCP initialize handshake completed on the last attempt
    LoginRequired       True when the server answered 401: each user must log in before it serves them

`render` is pure and stable: the same health and the same previous status give the same status, which is what
lets the writer skip a write whose content would not change.
"""

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.messages import ServerState

MAX_ERROR = 1024
_SECRETS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted]"),
    (
        re.compile(r"(?i)\b(access_token|refresh_token|id_token|token|password|secret|client_secret|code)=[^&\s\"']+"),
        r"\1=[redacted]",
    ),
)


class ServerStatus(BaseModel):
    """One server's health, produced by the discovery loop for the status writer."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    state: ServerState
    last_error: str | None = None
    last_connected: datetime | None = None  # when the current connected period began; steady while it lasts
    consecutive_failures: int = 0
    next_retry_after: datetime | None = None
    tool_count: int = 0
    observed_generation: int | None = None  # the generation of the spec this health was measured with
    protocol_version: str = ""
    server_info: dict[str, Any] = Field(default_factory=dict)
    exposed: bool = True  # False: listed, but its names collide with another server's (last_error says which)


def sanitize(message: str) -> str:
    """An error message fit for a status: credentials redacted, length bounded."""
    for pattern, replacement in _SECRETS:
        message = pattern.sub(replacement, message)
    return message if len(message) <= MAX_ERROR else message[: MAX_ERROR - 1] + "…"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(s: ServerStatus) -> list[tuple[str, str, str, str]]:
    error = sanitize(s.last_error) if s.last_error else "no error was reported"
    login = "the server answered 401: each user must log in to it before it serves them"
    if s.state == "Connected":
        info = s.server_info
        server = " ".join(str(info[k]) for k in ("name", "version") if info.get(k)) or "the server"
        handshake = ("True", "Initialized", f"{server} speaks MCP {s.protocol_version or '(unknown version)'}")
        login_required = ("False", "NotRequired", "the server answers without a user login")
        listed = ("True", "Connected", f"{s.tool_count} tools listed")
        ready = listed if s.exposed else ("False", "NotExposed", error)
    elif s.state == "Auth Required":
        handshake = ("False", "Unauthorized", login)
        login_required = ("True", "Unauthorized", login)
        ready = ("False", "LoginRequired", login)
    elif s.state == "Connecting":
        waiting = "no connection attempt has finished yet"
        handshake = ("Unknown", "Connecting", waiting)
        login_required = ("Unknown", "Connecting", waiting)
        ready = ("False", "Connecting", waiting)
    else:
        reason = "Unreachable" if s.state == "Disconnected" else "Failed"
        handshake = ("False", "HandshakeFailed", error)
        login_required = ("Unknown", "HandshakeFailed", error)
        ready = ("False", reason, error)
    return [("Ready", *ready), ("HandshakeSucceeded", *handshake), ("LoginRequired", *login_required)]


def _last_connected(s: ServerStatus, previous: dict[str, Any] | None) -> str | None:
    # A connected period that began under an earlier leader goes on under this one: its start stays as written.
    before = previous or {}
    if s.state == "Connected" and before.get("state") == "Connected" and before.get("lastConnected"):
        return str(before["lastConnected"])
    return _time(s.last_connected)


def render(s: ServerStatus, previous: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The status subresource for `s`; a condition whose status did not change keeps its lastTransitionTime."""
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or [] if isinstance(c, dict)}
    conditions = []
    for kind, truth, reason, message in _conditions(s):
        old = before.get(kind) or {}
        condition: dict[str, Any] = {
            "type": kind,
            "status": truth,
            "reason": reason,
            "message": message,
            "lastTransitionTime": (old.get("status") == truth and old.get("lastTransitionTime")) or _time(now),
        }
        if s.observed_generation is not None:
            condition["observedGeneration"] = s.observed_generation
        conditions.append(condition)
    status: dict[str, Any] = {
        "state": s.state,
        "consecutiveFailures": s.consecutive_failures,
        "toolCount": s.tool_count,
        "conditions": conditions,
    }
    optional = {
        "lastError": sanitize(s.last_error) if s.last_error else None,
        "lastConnected": _last_connected(s, previous),
        "nextRetryAfter": _time(s.next_retry_after),
        "observedGeneration": s.observed_generation,
        "protocolVersion": s.protocol_version or None,
        "serverInfo": {k: str(v) for k, v in s.server_info.items() if k in ("name", "title", "version") and v} or None,
    }
    status.update({k: v for k, v in optional.items() if v is not None})
    return status
