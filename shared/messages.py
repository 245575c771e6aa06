"""Every message that crosses a stream, with its encoding to and from stream fields.

The per-call messages (Call, CallReply, SessionEvent, Answer) are slotted dataclasses that carry JSON payloads
as the bytes they arrived as: the hot path routes on a few fields and never re-validates or re-encodes what it
only forwards. Control-plane messages (server records, capability changes, Control) are pydantic models.

Three ids, never mixed up: `call_id` is the replica-local id of a call (the key of the request waiting for it);
`request_id` is the client's own JSON-RPC id, which only the ingress reads; `traceparent` is the W3C trace context
of the call (shared/tracecontext.py), whose trace id is the request id of every log line about the call.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.mcpserver import Auth, Family, MCPServerSpec

Fields = Mapping[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Call:
    """One client request that must run at an upstream server: tools/call, resources/read, prompts/get, ..."""

    call_id: bytes  # unique within the replica: the key of the waiting request
    replica: bytes  # whose reply stream gets the outcome
    session: bytes  # the client's session; b"" for a per-request (2026-07-28) client
    principal: bytes
    server: bytes
    method: bytes
    params: bytes  # JSON object, already rewritten to the upstream's names
    deadline_ms: int  # wall clock, ms since the epoch
    safe: bool  # read-only or idempotent: may run again after a crash
    key: bytes  # what a cancellation names: session id and request id, or the call's own key
    # The caller's login (the family id of a muster login or of a forwarded ID token), whose upstream tokens a
    # server with a user credential is called with; b"" with auth off. Not a secret: it names a login.
    login: bytes = b""
    # The two below are for metrics, logs and traces; an entry enqueued without them (an older ingress) still runs.
    traceparent: bytes = b""  # W3C traceparent of the ingress's span of the call: sent upstream as a header
    target: bytes = b""  # the upstream's name of the tool or prompt the call runs, b"" for other methods

    def fields(self) -> list[bytes]:
        extra = [b"login", self.login] if self.login else []
        return [
            b"call_id",
            self.call_id,
            b"replica",
            self.replica,
            b"session",
            self.session,
            b"principal",
            self.principal,
            b"server",
            self.server,
            b"method",
            self.method,
            b"params",
            self.params,
            b"deadline",
            b"%d" % self.deadline_ms,
            b"safe",
            b"1" if self.safe else b"0",
            b"key",
            self.key,
            b"traceparent",
            self.traceparent,
            b"target",
            self.target,
            *extra,
        ]

    @classmethod
    def from_fields(cls, f: Fields) -> "Call":
        return cls(
            call_id=f[b"call_id"],
            replica=f[b"replica"],
            session=f[b"session"],
            principal=f[b"principal"],
            server=f[b"server"],
            method=f[b"method"],
            params=f[b"params"],
            deadline_ms=int(f[b"deadline"]),
            safe=f[b"safe"] == b"1",
            key=f[b"key"],
            login=f.get(b"login", b""),
            traceparent=f.get(b"traceparent", b""),
            target=f.get(b"target", b""),
        )


class ReplyKind(bytes, Enum):
    RESULT = b"r"  # final: body is the JSON-RPC result
    ERROR = b"e"  # final: body is the JSON-RPC error object
    NOTIFICATION = b"n"  # the upstream notified the caller during the call: body is the whole notification
    REQUEST = b"q"  # the upstream asked the caller during the call: body is the request without id; ref routes
    # the caller's answer back (to the worker's inbox)


@dataclass(frozen=True, slots=True)
class CallStats:
    """What the worker saw of a call, on its outcome: for the ingress's metrics and its one log line per call."""

    queue_us: int  # waited in its server's stream before this worker started it
    upstream_us: int = -1  # at the upstream, from sending the request until its answer; -1: never sent
    tool_error: bool = False  # a result with isError set: the tool ran and said no

    def encode(self) -> bytes:
        return b"%d %d %d" % (self.queue_us, self.upstream_us, self.tool_error)

    @classmethod
    def decode(cls, value: bytes) -> "CallStats":
        queue_us, upstream_us, tool_error = value.split()
        return cls(int(queue_us), int(upstream_us), tool_error == b"1")


@dataclass(frozen=True, slots=True)
class CallReply:
    """What a worker sends a waiting request: in order, zero or more notifications and requests, then one outcome."""

    call_id: bytes
    kind: ReplyKind
    body: bytes
    ref: bytes = b""  # REQUEST only: the worker's id for the relayed request
    stats: CallStats | None = None  # final replies from a worker

    @property
    def final(self) -> bool:
        return self.kind is ReplyKind.RESULT or self.kind is ReplyKind.ERROR

    def fields(self) -> list[bytes]:
        fields = [b"call_id", self.call_id, b"kind", self.kind.value, b"body", self.body]
        if self.ref:
            fields += (b"ref", self.ref)
        if self.stats is not None:
            fields += (b"stats", self.stats.encode())
        return fields


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A message for a session outside any call, for the GET stream the replica holds for that session: an
    upstream's notification, or (with a ref) an upstream's request whose id is the ref, which routes the client's
    answer back to the worker holding that upstream's GET stream."""

    session: bytes
    body: bytes  # the whole JSON-RPC notification or request
    ref: bytes = b""  # a request: the worker's id for it; a replica that cannot deliver it answers it at once

    def fields(self) -> list[bytes]:
        if self.ref:
            return [b"session", self.session, b"body", self.body, b"ref", self.ref]
        return [b"session", self.session, b"body", self.body]


ReplyStreamEntry = CallReply | SessionEvent


def read_reply(f: Fields) -> ReplyStreamEntry:
    """An entry of a reply stream: a call's reply, or (with no call_id) an event for a session."""
    call_id = f.get(b"call_id")
    if call_id is None:
        return SessionEvent(f[b"session"], f[b"body"], f.get(b"ref", b""))
    stats = f.get(b"stats")
    decoded = None if stats is None else CallStats.decode(stats)
    return CallReply(call_id, ReplyKind(f[b"kind"]), f[b"body"], f.get(b"ref", b""), decoded)


@dataclass(frozen=True, slots=True)
class Answer:
    """The client's response to a server->client request, on its way to the worker running the call."""

    ref: bytes  # the worker's own id for the pending request
    session: bytes  # who answers: only the session the request went to may; b"": muster, which cannot deliver it
    body: bytes  # b'"result":{...}' or b'"error":{...}', ready to splice into the upstream response

    def fields(self) -> list[bytes]:
        return [b"ref", self.ref, b"session", self.session, b"body", self.body]

    @classmethod
    def from_fields(cls, f: Fields) -> "Answer":
        return cls(ref=f[b"ref"], session=f[b"session"], body=f[b"body"])

    @property
    def worker(self) -> str:
        """The worker whose inbox gets the answer: a ref is "<worker id>/<number>"."""
        return self.ref.rsplit(b"/", 1)[0].decode()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


ServerState = Literal["Connecting", "Connected", "Auth Required", "Disconnected", "Failed"]


class ServerRecord(_Frozen):
    """What discovery knows of one upstream server, stored in streams.SERVERS: the ingress builds its Catalog
    from these, and workers their connections."""

    name: str
    url: str
    state: ServerState
    error: str | None = None
    prefix: str = ""  # the name prefix in force; "" when names pass unchanged
    exposed: bool = True  # False when the server's names collide (prefix mode `never`)
    revision: int = 0
    protocol_version: str = ""
    server_info: dict[str, Any] = Field(default_factory=dict)
    capabilities: dict[str, Any] = Field(default_factory=dict)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    resources: list[dict[str, Any]] = Field(default_factory=list)
    resource_templates: list[dict[str, Any]] = Field(default_factory=list)
    prompts: list[dict[str, Any]] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)  # spec.headers, sent with every upstream request
    safe_tools: list[str] | None = None  # per-server override of which tools may be re-run; None: from annotations
    timeout: float = 30.0  # spec.timeout: connect and initialize
    spec: MCPServerSpec | None = None  # the MCPServer spec as declared (core_mcpserver_list/get show it, redacted)
    source: Literal["filesystem", "kubernetes"] = "filesystem"  # where discovery read the MCPServer

    @property
    def family(self) -> Family | None:
        """spec.family: servers that share it offer each tool once, with an instance selector (shared/meta/families)."""
        return self.spec.family if self.spec is not None else None

    @property
    def auth(self) -> Auth | None:
        """spec.auth: which credential the server is called with (none, or the user's own: shared/identity/modes)."""
        return self.spec.auth if self.spec is not None else None


class CapabilityChange(_Frozen):
    """Published on streams.CAPABILITIES after server records changed; readers reload the named servers."""

    servers: list[str]
    tools: bool = True
    resources: bool = True
    prompts: bool = True


# streams.CONTROL carries four messages, told apart by `type`.


class CancelCall(_Frozen):
    """Stop a call: drop it from its queue, or cancel it at the upstream. Read by every worker."""

    type: Literal["cancel-call"] = "cancel-call"
    key: str  # Call.key
    reason: str = ""


class SessionEnded(_Frozen):
    """A client ended its session: every ingress replica forgets its copy and closes its GET stream."""

    type: Literal["session-ended"] = "session-ended"
    session: str


class SubscriptionsChanged(_Frozen):
    """Who subscribes to one server's resources changed: discovery subscribes upstream accordingly."""

    type: Literal["subscriptions-changed"] = "subscriptions-changed"
    server: str


class LoginChanged(_Frozen):
    """A user logged in to a server of their own (per-server OAuth): every ingress replica lists that server again
    for that user and tells the user's sessions that their lists changed."""

    type: Literal["login-changed"] = "login-changed"
    subject: str
    server: str


Control = Annotated[CancelCall | SessionEnded | SubscriptionsChanged | LoginChanged, Field(discriminator="type")]
_CONTROL: TypeAdapter[Control] = TypeAdapter(Control)

DATA = b"__data__"  # the one field of a control-plane entry


def encode(model: BaseModel) -> list[bytes]:
    """A control-plane message as stream fields."""
    return [DATA, model.model_dump_json(by_alias=True).encode()]


M = TypeVar("M", bound=BaseModel)


def decode(fields: Fields, model: type[M]) -> M:
    return model.model_validate_json(fields[DATA])


def decode_control(fields: Fields) -> Control:
    return _CONTROL.validate_json(fields[DATA])
