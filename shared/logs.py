"""Logging for every service: one JSON object per line, configured once in each __main__.

- Every line carries the request id of the call it belongs to (`request_id`, a contextvar set where a request
  enters a process: `with logs.request_scope(rid): ...`). For a call it is the trace id of its W3C trace context
  (shared/tracecontext.py), the same in the ingress, the worker and the traceparent header the upstream gets.
- `log_call` writes the one line per call: request id, a prefix of the session id, a keyed hash of the principal
  (`PrincipalHasher`: the same user hashes alike in every process that shares the key, and the name cannot be
  found again by hashing guesses without it), server, tool, outcome and durations.
- `Redactor`, installed on the handler by `configure`, withholds any line that looks like it carries a bearer
  token or a JWT: the line is replaced by a notice that names the logger and the code location, nothing else.
"""

import asyncio
import atexit
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

import orjson

# color_message: uvicorn's copy of its message with terminal colour codes, which a JSON line has no use for
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# "Bearer <token>" (an Authorization header, or text quoting one) and anything shaped like a JWS or JWE: base64url
# JSON objects start with "eyJ", so a header and a payload joined by a dot are a JWT whatever signs them.
_SECRET = re.compile(
    r"bearer\s+[A-Za-z0-9\-._~+/]{8,}=*"
    r"|eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}\.",
    re.IGNORECASE,
)
_SECRET_BYTES = re.compile(_SECRET.pattern.encode(), re.IGNORECASE)
WITHHELD: Final = "[withheld: looked like a credential]"


def _maybe_secret(text: str) -> bool:
    # Every match holds "bearer" or "eyj" in some case: two substring tests rule out most lines for a tenth of
    # what the case-blind alternation costs when it has to try every position of a line.
    lower = text.lower()
    return "eyj" in lower or "bearer" in lower


def looks_secret(text: str) -> bool:
    return _maybe_secret(text) and _SECRET.search(text) is not None


def redact(text: str) -> str:
    """`text` with every bearer token or JWT in it replaced, for error texts that leave the process."""
    return _SECRET.sub(WITHHELD, text)


def new_request_id() -> str:
    return secrets.token_hex(8)


@contextlib.contextmanager
def request_scope(rid: str) -> Iterator[str]:
    """Every line logged inside carries `rid` (including lines of tasks created inside, which copy the context)."""
    token = request_id.set(rid)
    try:
        yield rid
    finally:
        request_id.reset(token)


class PrincipalHasher:
    """A keyed hash of a principal (HMAC-SHA256, 16 hex digits): stable across processes sharing the key, and not
    reversible by hashing a list of user names, which a bare SHA-256 of the name would be."""

    CACHE: Final = 10_000  # principals remembered: an HMAC per call would cost more than the rest of the line

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the principal hash key needs at least 16 bytes")
        # a key of its own, so that the hash says nothing about the key it was derived from
        self._key = hmac.new(key, b"muster log principal hash", hashlib.sha256).digest()
        self._known: dict[str | bytes, str] = {}

    def __call__(self, principal: str | bytes) -> str:
        hashed = self._known.get(principal)
        if hashed is None:
            data = principal.encode() if isinstance(principal, str) else principal
            hashed = hmac.new(self._key, data, hashlib.sha256).hexdigest()[:16]
            if len(self._known) >= self.CACHE:
                self._known.clear()
            self._known[principal] = hashed
        return hashed


@dataclass(slots=True)  # not frozen: one is made per call, and a frozen one is made field by field
class CallRecord:
    """The one line logged per call."""

    request_id: str
    session: str  # the first 8 characters of the session id: enough to follow, not enough to use
    principal: str  # PrincipalHasher's hash
    server: str
    tool: str
    method: str
    outcome: str  # shared.labels.OUTCOMES
    total_ms: float
    queue_ms: float | None = None
    upstream_ms: float | None = None
    span_id: str = ""  # the call's own span in its trace: tells apart the calls of an agent's one trace

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {
            "request_id": self.request_id,
            "session": self.session[:8],
            "principal": self.principal,
            "server": self.server,
            "tool": self.tool,
            "method": self.method,
            "outcome": self.outcome,
            "total_ms": self.total_ms,
        }
        if self.queue_ms is not None:
            out["queue_ms"] = self.queue_ms
        if self.upstream_ms is not None:
            out["upstream_ms"] = self.upstream_ms
        if self.span_id:
            out["span_id"] = self.span_id
        return out


def log_call(logger: logging.Logger, record: CallRecord) -> None:
    """The call's one line. Where `configure` installed JSON lines, it is written straight to their stream, as
    JsonFormatter would write it and through the same guard: the logging machinery (a LogRecord, its caller's
    frame, the filter, the formatter) costs several times what the line itself does, on every call. Inside an
    event loop, the lines of one loop turn go out in one write, as the Valkey writes of a turn do."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _fast
    if handler is None or handler not in logging.root.handlers or logger.handlers or not logger.propagate:
        if _text:  # a person reads these at a terminal (`muster up`): the fields in the message itself
            logger.info("call %s", " ".join(f"{k}={v}" for k, v in record.fields().items()))
        else:
            logger.info("call", extra=record.fields())
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    entry = {
        "time": formatter.stamp(time.time()),
        "level": "info",
        "service": formatter.service,
        "logger": logger.name,
        "msg": "call",
        **record.fields(),
    }
    line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
    lower = line.lower()
    if (b"eyj" in lower or b"bearer" in lower) and _SECRET_BYTES.search(line) is not None:
        logger.info("call", extra=record.fields())  # the guard's way, which withholds it and says where it came from
        return
    _lines.write(handler, line)


class _Lines:
    """The call lines of one event-loop turn, written together at its end (or at once outside a loop)."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.handler: logging.StreamHandler[Any] | None = None

    def write(self, handler: "logging.StreamHandler[Any]", line: bytes) -> None:
        if self.pending and handler is not self.handler:
            self.flush()
        self.handler = handler
        self.pending.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if len(self.pending) == 1:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        lines, handler, self.pending = self.pending, self.handler, []
        if not lines or handler is None:
            return
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(b"".join(lines).decode())
            handler.stream.flush()


_lines = _Lines()
atexit.register(_lines.flush)  # the lines of a loop that stopped before its last turn ended


def _extras(record: logging.LogRecord) -> list[str]:
    """The names of the fields a line was given with `extra=`, sorted."""
    return sorted(k for k in record.__dict__.keys() - _RESERVED if k[0] != "_")


class Redactor(logging.Filter):
    """Refuses to let a line that looks like it carries a bearer token or JWT through; emits a notice instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            parts = [record.getMessage()]
        except (TypeError, ValueError, KeyError):  # a bad format string is the formatter's to report
            parts = [str(record.msg), *map(str, record.args or ())]
        extras = _extras(record)
        for key in extras:
            value = record.__dict__[key]
            if not isinstance(value, int | float | None):
                parts.append(str(value))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(logging.Formatter().formatException(record.exc_info))
        text = "\n".join(parts)
        if not _maybe_secret(text) or _SECRET.search(text) is None:
            return True
        for key in extras:
            delattr(record, key)
        record.msg = "log line withheld: it looked like it carried a credential (%s:%d)"
        record.args = (record.pathname.rsplit("/", 1)[-1], record.lineno)
        record.exc_info = record.exc_text = record.stack_info = None
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second, self._stamp = -1, ""

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second rather than per line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.stamp(record.created),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        fields = record.__dict__
        for key in _extras(record):
            entry[key] = fields[key]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_fast: "logging.StreamHandler[Any] | None" = None  # the JSON handler `configure` installed, for log_call
_text = False  # `configure` installed text lines


def configure(service: str, level: str = "INFO", json: bool = True) -> None:
    global _fast, _text
    handler: logging.StreamHandler[Any] = logging.StreamHandler(sys.stderr)
    _fast, _text = (handler if json else None), not json
    if json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redactor())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpx2", "httpcore", "kubernetes", "urllib3", "mcp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
