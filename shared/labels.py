"""The closed sets metric labels take their values from, and the one place that maps a value onto them.

A label value outside its set becomes OTHER, so that a client sending made-up tool names or methods, or an
upstream answering with made-up error codes, cannot grow the number of series.
"""

import socket
import ssl
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

import orjson

from shared import errors
from shared.http1 import ConnectionLost, Timeout
from shared.naming import expose
from shared.upstream import StatusError, UpstreamFailure

OTHER: Final = "_OTHER"  # OpenTelemetry's fallback value for error.type, used for every bounded label here

# Outcome classes of a routed call (muster_calls_total{outcome}).
OK: Final = "ok"
TOOL_ERROR: Final = "tool_error"  # a result with isError: the tool ran and said no (also error_type's value)
UPSTREAM_ERROR: Final = "upstream_error"  # the upstream answered with a JSON-RPC error
UNREACHABLE: Final = "unreachable"  # the upstream could not be reached; the call did not run (-32004)
DEADLINE: Final = "deadline"  # no outcome before the deadline (-32001)
REJECTED: Final = "rejected"  # backpressure: a queue was full (-32003)
UNKNOWN: Final = "unknown"  # the call may have run and is not safe to run twice (-32005)
UNAVAILABLE: Final = "unavailable"  # muster could not reach its Valkey (-32006)
CANCELLED: Final = "cancelled"  # the caller cancelled (-32800)
OUTCOMES: Final = frozenset(
    {OK, TOOL_ERROR, UPSTREAM_ERROR, UNREACHABLE, DEADLINE, REJECTED, UNKNOWN, UNAVAILABLE, CANCELLED}
)
_OUTCOME_OF_CODE: Final = {
    errors.UPSTREAM_UNAVAILABLE: UNREACHABLE,
    errors.DEADLINE_EXCEEDED: DEADLINE,
    errors.QUEUE_FULL: REJECTED,
    errors.OUTCOME_UNKNOWN: UNKNOWN,
    errors.SERVICE_UNAVAILABLE: UNAVAILABLE,
    errors.CANCELLED: CANCELLED,
}

# JSON-RPC codes kept as error_type values: the standard ones, MCP's, and muster's own.
ERROR_CODES: Final = frozenset(
    {
        errors.PARSE_ERROR,
        errors.INVALID_REQUEST,
        errors.METHOD_NOT_FOUND,
        errors.INVALID_PARAMS,
        errors.INTERNAL_ERROR,
        errors.RESOURCE_NOT_FOUND,
        -32042,  # MCP: URL elicitation required
        -32022,  # MCP: unsupported protocol version
        *_OUTCOME_OF_CODE,
    }
)

# Connect error classes (muster_upstream_connect_errors_total{class}, and error_type at the worker).
REFUSED: Final = "refused"
TIMEOUT: Final = "timeout"
TLS: Final = "tls"
DNS: Final = "dns"
RESET: Final = "reset"  # the connection broke
NETWORK: Final = "network"  # another OS-level failure: no route, network unreachable
PROTOCOL: Final = "protocol"
CONNECT_CLASSES: Final = frozenset({REFUSED, TIMEOUT, TLS, DNS, RESET, NETWORK, PROTOCOL})  # and http_<status>

ERROR_TYPES: Final = frozenset({"", TOOL_ERROR, *(str(c) for c in ERROR_CODES), *CONNECT_CLASSES})

# The MCP methods of every released protocol version (mcp_types.methods; tests/shared/test_labels.py keeps
# the two in step). Written out: importing mcp_types costs the worker a second at start.
METHODS: Final = frozenset(
    {
        "completion/complete", "elicitation/create", "initialize", "logging/setLevel", "notifications/cancelled",
        "notifications/elicitation/complete", "notifications/initialized", "notifications/message",
        "notifications/progress", "notifications/prompts/list_changed", "notifications/resources/list_changed",
        "notifications/resources/updated", "notifications/roots/list_changed",
        "notifications/subscriptions/acknowledged", "notifications/tools/list_changed", "ping", "prompts/get",
        "prompts/list", "resources/list", "resources/read", "resources/subscribe", "resources/templates/list",
        "resources/unsubscribe", "roots/list", "sampling/createMessage", "server/discover",
        "subscriptions/listen", "tools/call", "tools/list",
    }
)  # fmt: skip
# mcp_types.version.KNOWN_PROTOCOL_VERSIONS, written out for the same reason.
PROTOCOL_VERSIONS: Final = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"})

REJECTION_REASONS: Final = frozenset({"queue_full", "replica_full"})
INIT_REASONS: Final = frozenset({"new", "lost"})
CREDENTIAL_OUTCOMES: Final = frozenset({OK, "rejected", "error"})
CATALOG_KINDS: Final = frozenset({"tools", "resources", "resource_templates", "prompts"})


_CODE: Final = b'{"code":'


def code_of(error: bytes) -> int | None:
    """The code of a JSON-RPC error object as bytes: read off the front where muster wrote it, else parsed; None
    for anything that is not an error object with an integer code."""
    if error.startswith(_CODE):
        try:
            return int(error[len(_CODE) : error.find(b",", len(_CODE))])
        except ValueError:
            pass
    try:
        code = orjson.loads(error).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def classify(code: int | None, is_error: bool = False) -> tuple[str, str]:
    """(outcome, error_type) of a call that ended with JSON-RPC error `code`, or with a result (code None).

    muster's own codes lie in the implementation-defined range, where an upstream may use them too; such an
    upstream error is counted as muster's class of the same code.
    """
    if code is None:
        return (TOOL_ERROR, TOOL_ERROR) if is_error else (OK, "")
    error_type = str(code) if code in ERROR_CODES else OTHER
    return _OUTCOME_OF_CODE.get(code, UPSTREAM_ERROR), error_type


# Most specific first: every one of these is an OSError.
_CAUSES: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (ConnectionRefusedError, REFUSED),
    (Timeout, TIMEOUT),
    (TimeoutError, TIMEOUT),
    (ssl.SSLError, TLS),
    (socket.gaierror, DNS),
    (ConnectionError, RESET),
    (OSError, NETWORK),
)


def connect_error_class(exc: BaseException) -> str:
    """The class of a failure to reach an upstream: one of CONNECT_CLASSES, or http_<status>."""
    if isinstance(exc, StatusError):
        return f"http_{exc.status}" if 100 <= exc.status <= 599 else PROTOCOL
    if isinstance(exc, ConnectionLost):
        return RESET
    if isinstance(exc, UpstreamFailure):
        return PROTOCOL
    cause: BaseException | None = exc
    while cause is not None:  # ConnectFailed wraps the error that says what happened
        for kind, name in _CAUSES:
            if isinstance(cause, kind):
                return name
        cause = cause.__cause__
    return PROTOCOL


class CatalogEntry(Protocol):
    """What label bounds read of a server's catalog entry (shared.messages' server model has these fields)."""

    @property
    def name(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def tools(self) -> Sequence[dict[str, Any]]: ...
    @property
    def prompts(self) -> Sequence[dict[str, Any]]: ...


class LabelBounds:
    """The servers, tools and prompts label values may name: those of the catalog.

    Tools are known by their upstream names and by the names agents see; both are bounded by the catalog.
    """

    def __init__(self) -> None:
        self.servers: frozenset[str] = frozenset()
        self.tools: frozenset[str] = frozenset()
        self.prompts: frozenset[str] = frozenset()

    def update(self, entries: Iterable[CatalogEntry]) -> None:
        servers: set[str] = set()
        tools: set[str] = set()
        prompts: set[str] = set()
        for entry in entries:
            servers.add(entry.name)
            for kind, names in ((entry.tools, tools), (entry.prompts, prompts)):
                for item in kind:
                    name = item.get("name")
                    if isinstance(name, str):
                        names.add(name)
                        names.add(expose(entry.prefix, name))
        self.servers, self.tools, self.prompts = frozenset(servers), frozenset(tools), frozenset(prompts)

    def server(self, name: str) -> str:
        return name if name in self.servers else OTHER

    def tool(self, name: str) -> str:
        return name if name in self.tools or not name else OTHER

    def prompt(self, name: str) -> str:
        return name if name in self.prompts or not name else OTHER

    @staticmethod
    def method(name: str) -> str:
        return name if name in METHODS else OTHER

    @staticmethod
    def protocol(version: str) -> str:
        return version if version in PROTOCOL_VERSIONS or not version else OTHER

    @staticmethod
    def error_type(value: str) -> str:
        if value in ERROR_TYPES or (value.startswith("http_") and value[5:].isdigit() and len(value) == 8):
            return value
        return OTHER

    @staticmethod
    def one_of(value: str, allowed: frozenset[str]) -> str:
        return value if value in allowed else OTHER
