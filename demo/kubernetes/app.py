"""A faithful Python stand-in of giantswarm/mcp-kubernetes (reference/mcp-kubernetes.md §7).

The SDK's low-level server in stateless JSON mode behind an ASGI layer that mimics mcp-go's session ids,
plus fault injection and counters that tests read over HTTP at /_standin/.
"""

import asyncio
import contextvars
import json
import random
import re
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from jsonschema import Draft202012Validator
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.types import Message, Receive, Scope, Send

from demo.kubernetes.auth import BearerCheck, Refusal
from demo.kubernetes.objects import build
from demo.kubernetes.tools import DEMO_POLICY, Handlers, Identity, Policy, ToolError, definitions, validation_error

VERSION = "0.1.113-standin"
SESSION_ID = re.compile(rb"^mcp-session-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_TEXT = 128 * 1024
ANONYMOUS = Identity()
CALLER: contextvars.ContextVar[Identity] = contextvars.ContextVar("caller", default=ANONYMOUS)


class _Server(Server[Any]):
    """mcp-go announces tools.listChanged; the SDK only does when asked at each initialization."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True), experimental_capabilities, extensions
        )


@dataclass
class Fault:
    """One injected fault: what it matches, what it does, and how many more times."""

    # delay | http_status | drop_connection | session_reject | jsonrpc_error | oversize | tool_timeout | tool_error
    action: str
    tool: str | None = None
    method: str | None = None
    count: int | None = None  # None: forever
    seconds: float = 0.0
    status: int = 500
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    code: int = -32603
    message: str = "injected error"
    probability: float = 1.0

    def matches(self, method: str | None, tool: str | None, rng: random.Random) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.tool is not None and self.tool != tool:
            return False
        return rng.random() < self.probability


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)  # "POST 200", ...
    methods: Counter[str] = field(default_factory=Counter)
    tools: Counter[str] = field(default_factory=Counter)
    started: Counter[str] = field(default_factory=Counter)
    finished: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    running: int = 0
    callers: Counter[str] = field(default_factory=Counter)  # who called tools: email (or anonymous)
    refused: Counter[str] = field(default_factory=Counter)  # 401s by reason
    # the traceparent headers of the last tools/calls, oldest first
    traceparents: deque[str] = field(default_factory=lambda: deque(maxlen=1000))


class StandIn:
    def __init__(
        self,
        cluster: str,
        *,
        capi_mode: bool = False,
        destructive: bool = False,
        policy: dict[str, Any] | None = None,
        workload_clusters: list[str] | None = None,
        seed: int = 7,
        auth: BearerCheck | None = None,
    ) -> None:
        self.auth = auth
        self.cluster_name = cluster
        self.handlers = Handlers(build(cluster, workload_clusters), Policy(policy or DEMO_POLICY), capi_mode)
        self.tools = definitions(capi_mode, destructive)
        self.validators = {t["name"]: Draft202012Validator(t["inputSchema"]) for t in self.tools}
        self.faults: list[Fault] = []
        self.stats = Stats()
        self.rng = random.Random(seed)
        self.server = _Server(
            "mcp-kubernetes", version=VERSION, on_list_tools=self._list_tools, on_call_tool=self._call_tool
        )
        self.manager = StreamableHTTPSessionManager(
            self.server,
            stateless=True,
            json_response=True,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    # MCP handlers
    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool.model_validate(t) for t in self.tools])

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name = params.name
        if name not in self.validators:
            raise MCPError(-32602, f"tool '{name}' not found: tool not found")
        arguments = params.arguments or {}
        self.stats.tools[name] += 1
        problem = validation_error(self.validators[name], arguments)
        if problem:
            return _text(f"input schema validation failed: {problem}", error=True)
        self.stats.started[name] += 1
        self.stats.running += 1
        try:
            await self._tool_faults(name)
            caller = CALLER.get()
            self.stats.callers[caller.email] += 1
            text = self.handlers.call(name, arguments, caller)
        except ToolError as exc:
            return _text(str(exc), error=True)
        except asyncio.CancelledError:
            self.stats.cancelled[name] += 1
            raise
        finally:
            self.stats.running -= 1
        self.stats.finished[name] += 1
        if len(text.encode()) > MAX_TEXT:
            return _text(_oversize(len(text.encode())), error=True)
        return _text(text)

    async def _tool_faults(self, name: str) -> None:
        for fault in self._take("tools/call", name, ("delay", "tool_timeout", "oversize", "tool_error")):
            if fault.action == "tool_error":  # e.g. "Unauthorized": what the Kubernetes API answered the tool
                raise ToolError(fault.message)
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.action == "tool_timeout":
                raise ToolError(f'tool "{name}" exceeded timeout of 30s')
            elif fault.action == "oversize":
                raise ToolError(_oversize(MAX_TEXT + 1))

    def _take(self, method: str | None, tool: str | None, actions: tuple[str, ...]) -> list[Fault]:
        taken = []
        for fault in self.faults:
            if fault.action in actions and fault.matches(method, tool, self.rng):
                if fault.count is not None:
                    fault.count -= 1
                taken.append(fault)
        return taken

    # ASGI
    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        if self.auth is not None:
            await self.auth.start()
        try:
            async with self.manager.run():
                yield
        finally:
            if self.auth is not None:
                await self.auth.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope["path"]
        if path == "/mcp":
            await self._mcp(scope, receive, send)
        elif path.startswith("/_standin/"):
            await self._admin(scope, receive, send)
        elif path == "/healthz":
            await _respond(send, 200, {"status": "ok"})
        elif path == "/readyz":
            await _respond(
                send, 200, {"status": "ok", "checks": {"ready": True, "shutdown": False, "instrumentation": True}}
            )
        elif self.auth is not None and self.auth.protected and path.startswith("/.well-known/oauth-protected-resource"):
            await _respond(send, 200, self.auth.resource_metadata())
        elif path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server"):
            await _respond(send, 404, {"error": "not_found", "error_description": "OAuth is not enabled"})
        else:
            await _respond(send, 404, "404 page not found\n")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        async with self.lifespan():
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        headers = dict(scope["headers"])
        if self.auth is not None:
            who = await self.auth.check(headers.get(b"authorization"))
            if isinstance(who, Refusal):
                self.stats.refused[who.body.decode()[:80]] += 1
                self.stats.requests[f"{method} 401"] += 1
                await _respond(send, who.status, who.body.decode(), who.headers)
                return
            CALLER.set(who)
        if method in ("DELETE", "HEAD"):
            self.stats.requests[f"{method} 200"] += 1
            await _respond(send, 200, "")
            return
        if method != "POST":
            self.stats.requests[f"{method} 404"] += 1
            await _respond(send, 405, "Streaming is disabled on this server\n")
            return
        body = await _read_body(receive)
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        rpc = message.get("method") if isinstance(message, dict) else None
        tool = (message.get("params") or {}).get("name") if isinstance(message, dict) else None
        if rpc:
            self.stats.methods[rpc] += 1
        if rpc == "tools/call":
            self.stats.traceparents.append(headers.get(b"traceparent", b"").decode())
        extra: list[tuple[bytes, bytes]] = []
        if rpc == "initialize":
            extra.append((b"mcp-session-id", f"mcp-session-{uuid.uuid4()}".encode()))
            self.stats.sessions += 1
        elif not SESSION_ID.match(headers.get(b"mcp-session-id", b"")):
            self.stats.requests["POST 404"] += 1
            await _respond(send, 404, "Invalid session ID\n")
            return
        if rpc == "notifications/cancelled":
            self.stats.cancelled["notification"] += 1
        for fault in self._take(
            rpc, tool, ("http_status", "session_reject", "drop_connection", "jsonrpc_error", "rate_limit")
        ):
            self.stats.requests[f"POST fault {fault.action}"] += 1
            if fault.action == "session_reject":
                await _respond(send, 404, "Invalid session ID\n")
            elif fault.action == "rate_limit":
                await _respond(
                    send,
                    429,
                    {
                        "error": "rate_limit_exceeded",
                        "error_description": "Rate limit exceeded. Please try again later.",
                    },
                    {"Retry-After": str(int(fault.seconds) or 1)},
                )
            elif fault.action == "http_status":
                await _respond(send, fault.status, fault.body, fault.headers)
            elif fault.action == "jsonrpc_error":
                await _respond(
                    send,
                    200,
                    {
                        "jsonrpc": "2.0",
                        "id": message.get("id"),
                        "error": {"code": fault.code, "message": fault.message},
                    },
                )
            else:  # drop_connection: start a response, then break the connection
                await send(
                    {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": b'{"jsonrpc":', "more_body": True})
                raise ConnectionAbortedError("injected drop_connection")
            return

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send_with_session(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *extra]}
                self.stats.requests[f"POST {msg['status']}"] += 1
            await send(msg)

        await self.manager.handle_request(scope, replay, send_with_session)

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/_standin/faults" and scope["method"] == "POST":
            spec = json.loads(await _read_body(receive))
            self.faults.append(Fault(**spec))
            await _respond(send, 200, {"faults": len(self.faults)})
        elif path == "/_standin/faults" and scope["method"] == "DELETE":
            self.faults.clear()
            await _respond(send, 200, {"faults": 0})
        elif path == "/_standin/stats":
            s = self.stats
            await _respond(
                send,
                200,
                {
                    "cluster": self.cluster_name,
                    "requests": s.requests,
                    "methods": s.methods,
                    "tools": s.tools,
                    "started": s.started,
                    "finished": s.finished,
                    "cancelled": s.cancelled,
                    "sessions": s.sessions,
                    "running": s.running,
                    "callers": s.callers,
                    "refused": s.refused,
                    "traceparents": list(s.traceparents),
                },
            )
        else:
            await _respond(send, 404, {"error": "unknown admin path"})


def _text(text: str, *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error)


def _oversize(size: int) -> str:
    return json.dumps(
        {
            "error": "response_too_large",
            "bytes": size,
            "limit": MAX_TEXT,
            "message": f"response is {size} bytes, exceeds {MAX_TEXT} byte limit",
            "hint": "narrow the query: tighten filters, reduce the time range, or request fewer items",
        }
    )


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    if isinstance(body, str):
        data, ctype = body.encode(), b"text/plain; charset=utf-8"
    else:
        data, ctype = json.dumps(body).encode(), b"application/json"
    raw = [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
