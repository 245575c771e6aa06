"""/healthz, /readyz and /metrics: as an ASGI app any service can mount, and served on a port of its own for the
services that have no HTTP server (worker, discovery).

    /healthz   200 while the process serves HTTP at all: the liveness probe
    /readyz    200 when every registered readiness check passes within its bound, else 503; the body names each
               check's result ({"status": "ok" | "not ready", "checks": {"valkey": "ok", ...}})
    /metrics   the process's registry in the Prometheus text format, after the scrape hooks (the queue gauges'
               Valkey reads) ran within their bounds

`serve(app, host, port)` is an async context manager for a lifespan: it binds before it returns (a port in
use fails the start, not a later scrape) and stops the server on exit. Port 0 means off.
"""

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared.lifecycle import within
from shared.logs import redact

logger = logging.getLogger(__name__)

DEFAULT_PORT: Final = 9090  # worker and discovery; the ingress serves these paths on its MCP port
PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})

Probe = Callable[[], Awaitable[object]]  # raises when the dependency is not usable
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    probe: Probe
    timeout: float


class Health:
    """The three endpoints over one registry, with the readiness checks and scrape hooks a service registers."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.checks: list[Check] = []
        self.scrape_hooks: list[tuple[Callable[[], Awaitable[None]], float]] = []

    def check(self, name: str, probe: Probe, timeout: float = 1.0) -> None:
        """Adds a readiness check, e.g. `health.check("valkey", client.ping)`: ready only while it passes."""
        self.checks.append(Check(name, probe, timeout))

    def before_scrape(self, hook: Callable[[], Awaitable[None]], timeout: float = 2.0) -> None:
        """Runs `hook` (bounded) before each /metrics rendering, e.g. QueueCollector.refresh."""
        self.scrape_hooks.append((hook, timeout))

    async def ready(self) -> tuple[bool, dict[str, str]]:
        # Every way a probe can fail is an answer (not ready, and why): gather returns the exceptions as results.
        results = await asyncio.gather(*(within(c.probe(), c.timeout) for c in self.checks), return_exceptions=True)
        checks = {c.name: _verdict(c, r) for c, r in zip(self.checks, results, strict=True)}
        return all(v == "ok" for v in checks.values()), checks

    async def metrics(self) -> bytes:
        # A failing hook leaves its gauges as it left them; the scrape still renders what the process knows.
        results = await asyncio.gather(
            *(within(hook(), timeout) for hook, timeout in self.scrape_hooks), return_exceptions=True
        )
        for (hook, _), result in zip(self.scrape_hooks, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("scrape hook %s failed: %r", getattr(hook, "__qualname__", hook), result)
        return generate_latest(self.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", b"text/plain; charset=utf-8")
        elif path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}', b"application/json")
        elif path == "/readyz":
            ok, checks = await self.ready()
            body = orjson.dumps({"status": "ok" if ok else "not ready", "checks": checks})
            await _respond(send, 200 if ok else 503, body, b"application/json")
        elif path == "/metrics":
            await _respond(send, 200, await self.metrics(), CONTENT_TYPE_LATEST.encode())
        else:
            await _respond(send, 404, b"not found\n", b"text/plain; charset=utf-8")


def _verdict(check: Check, result: object) -> str:
    if isinstance(result, TimeoutError):
        return f"no answer within {check.timeout:g} s"
    if isinstance(result, BaseException):
        # the text reaches an HTTP response: it must not carry a credential that came with the error
        return redact(f"{type(result).__name__}: {result}")
    return "ok"


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    # uvicorn.Server.serve takes over SIGINT and SIGTERM for as long as it runs; here the service owns them.
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def serve(app: Health, host: str, port: int) -> AsyncIterator[int | None]:
    """Serves `app` on host:port while the context lasts; yields the port, or None when port is 0 (off)."""
    if port == 0:
        yield None
        return
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=1)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"health server {host}:{port}")
    try:
        logger.info("serving /healthz, /readyz and /metrics at http://%s:%d", host, port)
        yield port
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await task
        except TimeoutError:
            task.cancel()
        finally:
            sock.close()
