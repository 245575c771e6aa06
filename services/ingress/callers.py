"""Who sends a request: a client in a handshake session (2024-11-05 to 2025-11-25), or a per-request client
(2026-07-28) whose envelope in `params._meta` says on each request what a session would hold.

The two differ in what they can be asked, how their calls are named for cancellation, and how results are
shaped; each type answers for itself, so that the code that serves both never asks which one it has.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from shared import rawjson
from shared.rawjson import Document, string

# 2026-07-28 results name their kind, and cacheable ones say how long they may be cached; results from an
# upstream in a handshake-era session do neither.
_COMPLETE = b'{"resultType":"complete"'
_CACHEABLE = b'{"resultType":"complete","ttlMs":0,"cacheScope":"private"'
CACHEABLE = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list", "resources/read"})
RESERVED_META = "io.modelcontextprotocol/"
# A per-request client that did not opt in to log messages gets none (2026-07-28, SEP-2577).
NO_LOGS = "off"
# What a 2026-07-28 client can be asked through an input_required result (InputRequest in the mcp package).
INPUT_REQUESTS = frozenset({"sampling/createMessage", "elicitation/create", "roots/list"})


def id_key(raw: bytes) -> bytes:
    """A request id (JSON bytes) as calls are named by it: a string in one spelling whatever its escapes, an
    integer as sent (of any size)."""
    return orjson.dumps(string(raw)) if raw[:1] == b'"' else raw


@dataclass(slots=True)
class Session:
    """A client that opened a session with initialize; kept in Valkey (sessions.py)."""

    id: str
    protocol: str
    capabilities: dict[str, Any]
    principal: str
    level: str = ""  # logging level the client asked for; "" = everything
    checked: float = 0.0  # when this copy was last read from Valkey (monotonic)

    # A session is asked nothing on a response that cannot stream; a per-request client cancels by going away.
    cancels_by_disconnect: ClassVar[bool] = False
    # A session is asked with a request on the call's event stream; a per-request client with an input_required
    # result that it answers by sending the request again.
    asks_by_result: ClassVar[bool] = False
    unknown_method_status: ClassVar[int] = 200

    @property
    def session_id(self) -> bytes:
        return self.id.encode()

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def call_key(self, request_id: bytes, replica: bytes, call_id: bytes) -> bytes:
        """What notifications/cancelled names: the session and the client's own request id."""
        return self.session_id + b" " + id_key(request_id)

    def upstream_params(self, params: Document | None) -> Document | None:
        return params

    def result(self, method: str, result: bytes) -> bytes:
        return result

    def result_parts(self, method: str, result: bytes) -> tuple[bytes | memoryview, ...]:
        return (result,)

    def cannot_ask(self, streaming: bool, capability: str | None, method: str = "") -> str | None:
        """Why a request an upstream sends during a call cannot go to this client, or None when it can."""
        if not streaming:
            return "the client does not accept an event stream, so it cannot be asked"
        if capability is not None and not self.supports(capability):
            return f"the client did not declare the {capability} capability"
        return None


@dataclass(slots=True)
class Envelope:
    """A per-request (2026-07-28) client: no session, everything it declares travels with each request."""

    protocol: str
    capabilities: dict[str, Any]
    principal: str
    level: str = NO_LOGS

    cancels_by_disconnect: ClassVar[bool] = True
    asks_by_result: ClassVar[bool] = True
    unknown_method_status: ClassVar[int] = 404
    session_id: ClassVar[bytes] = b""

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def call_key(self, request_id: bytes, replica: bytes, call_id: bytes) -> bytes:
        """No session to name its calls by: the client cancels by closing the response, which names the call."""
        return b"~" + replica + b"/" + call_id

    def upstream_params(self, params: Document | None) -> Document | None:
        """The params without the envelope, for an upstream that speaks a handshake-era protocol; every other byte
        as the client sent it."""
        if params is None or not isinstance(params.value, dict):
            return params
        meta = params.child("_meta")
        if meta is None or not isinstance(meta.value, dict):
            return params
        envelope = frozenset(k for k in meta.value if k.startswith(RESERVED_META))
        if not envelope:
            return params
        rest = {k: v for k, v in params.value.items() if k != "_meta"}
        if len(envelope) == len(meta.value):
            return Document(params.rebuilt({}, frozenset({"_meta"})), rest)
        kept = {k: v for k, v in meta.value.items() if k not in envelope}
        return Document(params.rebuilt({"_meta": meta.rebuilt({}, envelope)}), {**rest, "_meta": kept})

    def result(self, method: str, result: bytes) -> bytes:
        return b"".join(self.result_parts(method, result))

    def result_parts(self, method: str, result: bytes) -> tuple[bytes | memoryview, ...]:
        """The result with its kind first: the upstream's object opened up, never copied."""
        head = _CACHEABLE if method in CACHEABLE else _COMPLETE
        inside = rawjson.inside(result)
        if result[inside : inside + 1] == b"}":
            return (head + b"}",)
        return head + b",", memoryview(result)[inside:]

    def cannot_ask(self, streaming: bool, capability: str | None, method: str = "") -> str | None:
        if method not in INPUT_REQUESTS:
            return f"a per-request (2026-07-28) client cannot be asked {method or 'this'}"
        if capability is not None and not self.supports(capability):
            return f"the client did not declare the {capability} capability"
        return None


Caller = Session | Envelope
