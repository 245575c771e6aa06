"""Every message that crosses a stream, with its encoding to and from stream fields.

The per-call messages (Call, Reply) are slotted dataclasses that carry JSON payloads as the bytes they
arrived as: the hot path routes on a few fields and never re-validates or re-encodes what it only forwards.
Control-plane messages (catalog entries, capability changes) are pydantic models.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Fields = Mapping[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Call:
    """One client request that must run at an upstream server: tools/call, resources/read, prompts/get, ..."""

    rid: bytes  # unique within the replica: the key of the waiting caller
    replica: bytes  # whose reply stream gets the outcome
    session: bytes
    principal: bytes
    server: bytes
    method: bytes
    params: bytes  # JSON object, already rewritten to the upstream's names
    deadline_ms: int  # wall clock, ms since the epoch
    safe: bool  # read-only or idempotent: may run again after a crash
    key: bytes  # session id + the client's request id, which is what a cancellation names

    def fields(self) -> list[bytes]:
        return [
            b"rid",
            self.rid,
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
        ]

    @classmethod
    def from_fields(cls, f: Fields) -> "Call":
        return cls(
            rid=f[b"rid"],
            replica=f[b"replica"],
            session=f[b"session"],
            principal=f[b"principal"],
            server=f[b"server"],
            method=f[b"method"],
            params=f[b"params"],
            deadline_ms=int(f[b"deadline"]),
            safe=f[b"safe"] == b"1",
            key=f[b"key"],
        )


class ReplyKind(bytes, Enum):
    RESULT = b"r"  # final: body is the JSON-RPC result
    ERROR = b"e"  # final: body is the JSON-RPC error object
    NOTIFY = b"n"  # a notification for the caller during the call: body is the whole JSON-RPC notification
    REQUEST = b"q"  # a server->client request during the call: body is the request without id, ref routes the answer
    SESSION = b"s"  # not part of a call: a notification for the session named by rid, for its GET stream


@dataclass(frozen=True, slots=True)
class Reply:
    rid: bytes
    kind: ReplyKind
    body: bytes
    ref: bytes = b""

    @property
    def final(self) -> bool:
        return self.kind is ReplyKind.RESULT or self.kind is ReplyKind.ERROR

    def fields(self) -> list[bytes]:
        if self.ref:
            return [b"rid", self.rid, b"kind", self.kind.value, b"body", self.body, b"ref", self.ref]
        return [b"rid", self.rid, b"kind", self.kind.value, b"body", self.body]

    @classmethod
    def from_fields(cls, f: Fields) -> "Reply":
        return cls(rid=f[b"rid"], kind=ReplyKind(f[b"kind"]), body=f[b"body"], ref=f.get(b"ref", b""))


@dataclass(frozen=True, slots=True)
class Answer:
    """The client's response to a server->client request, on its way to the worker running the call."""

    ref: bytes  # the worker's own id for the pending request
    session: bytes  # who answers: only the session the request went to may
    body: bytes  # b'"result":{...}' or b'"error":{...}', ready to splice into the upstream response

    def fields(self) -> list[bytes]:
        return [b"ref", self.ref, b"session", self.session, b"body", self.body]

    @classmethod
    def from_fields(cls, f: Fields) -> "Answer":
        return cls(ref=f[b"ref"], session=f[b"session"], body=f[b"body"])


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


ServerState = Literal["Connecting", "Connected", "Auth Required", "Disconnected", "Failed"]


class ServerCatalog(_Frozen):
    """What discovery knows of one upstream server: the catalog entry the ingress builds its view from."""

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


class Control(_Frozen):
    """Broadcast on streams.CONTROL to every worker and ingress replica."""

    kind: Literal["cancel", "session-ended", "subscriptions"]
    key: str  # cancel: the call's key; session-ended: the session id; subscriptions: the server
    reason: str = ""


class CapabilityChange(_Frozen):
    """Published on streams.CAPABILITIES after the catalog changed; readers reload the named servers."""

    servers: list[str]
    tools: bool = True
    resources: bool = True
    prompts: bool = True


DATA = b"__data__"  # the one field of a control-plane entry; FastStream reads plain JSON from it


def encode(model: BaseModel) -> dict[bytes, bytes]:
    return {DATA: model.model_dump_json(by_alias=True).encode()}


M = TypeVar("M", bound=BaseModel)


def decode(fields: Fields, model: type[M]) -> M:
    return model.model_validate_json(fields[DATA])
