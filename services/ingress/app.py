"""The ingress ASGI application: the MCP endpoint, health, readiness and metrics on one port.

`create_app(settings)` returns the application; its lifespan builds every resource (Valkey connections, the
reply and broadcast readers) at startup and closes them at shutdown.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.ingress.broadcasts import Broadcasts
from services.ingress.calls import Calls
from services.ingress.config import IngressSettings
from services.ingress.current import CurrentCatalog
from services.ingress.endpoint import Endpoint
from services.ingress.forward import Forwarder
from services.ingress.get_streams import GetStreams
from services.ingress.handlers import Handlers
from services.ingress.http import Receive, Scope, Send, respond, respond_json, respond_text
from services.ingress.inputs import Inputs
from services.ingress.sessions import Sessions
from services.ingress.tapes import Tapes
from shared.valkey import Outbox, connect

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Parts:
    """What the lifespan builds, for the requests served while it lasts."""

    client: Redis
    calls: Calls
    current: CurrentCatalog
    get_streams: GetStreams
    endpoint: Endpoint


@contextlib.asynccontextmanager
async def lifespan(settings: IngressSettings) -> AsyncIterator[Parts]:
    name = f"muster-ingress-{settings.replica_id}"
    client = connect(settings.valkey_url, max_connections=256, name=name)
    outbox = Outbox(settings.valkey_url, name=f"{name}-out")
    get_streams = GetStreams()
    sessions = Sessions(
        outbox,
        settings.replica_id,
        settings.session_ttl,
        settings.session_recheck,
        max_sessions=settings.max_sessions,
        max_bytes=settings.max_session_bytes,
        retry_after=settings.retry_after,
    )
    calls = Calls(
        client,
        outbox,
        settings.replica_id,
        get_streams,
        queue_limit=settings.queue_limit,
        max_pending=settings.max_pending,
        retry_after=settings.retry_after,
    )
    current = CurrentCatalog()
    broadcasts = Broadcasts(client, current, get_streams, sessions)
    tapes = Tapes(client, outbox, keep=settings.resume_seconds, block_ms=int(settings.keepalive_seconds * 1000))
    forwarder = Forwarder(calls, outbox, tapes, sessions, settings.replica_id, settings.call_timeout)
    inputs = Inputs(forwarder, tapes, calls)
    handlers = Handlers(sessions, current, forwarder, outbox)
    tasks: list[asyncio.Task[None]] = []
    try:
        await broadcasts.start()
        tasks = [asyncio.create_task(t) for t in (calls.read_replies(), calls.sweep(), broadcasts.run())]
        yield Parts(client, calls, current, get_streams, Endpoint(settings, sessions, handlers, get_streams, tapes))
    finally:
        inputs.close()
        get_streams.close_all()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        outbox.close()


class Ingress:
    def __init__(self, settings: IngressSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.parts: Parts | None = None
        Gauge("muster_ingress_pending_calls", "Calls this replica waits for", registry=self.registry).set_function(
            lambda: len(self.parts.calls.pending) if self.parts else 0
        )
        Gauge("muster_ingress_event_streams", "Open GET event streams", registry=self.registry).set_function(
            lambda: len(self.parts.get_streams.queues) if self.parts else 0
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, parts = scope["path"], self.parts
            if path == self.settings.path and parts is not None:
                await parts.endpoint(scope, receive, send)
            elif path == "/healthz":
                await respond_json(send, 200, {"status": "ok"})
            elif path == "/readyz":
                await self.ready(send)
            elif path == "/metrics":
                await respond(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode())
            else:
                await respond_text(send, 404, "Not Found")
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def ready(self, send: Send) -> None:
        checks = {"valkey": "not started", "catalog": "not loaded yet"}
        if self.parts is not None:
            try:
                await asyncio.wait_for(self.parts.client.ping(), 1.0)
                checks["valkey"] = "ok"
            except (RedisError, OSError) as exc:
                checks["valkey"] = f"unreachable: {exc or type(exc).__name__}"
            if self.parts.current.loaded:
                checks["catalog"] = "ok"
        ok = all(v == "ok" for v in checks.values())
        await respond_json(send, 200 if ok else 503, {"status": "ok" if ok else "not ready", "checks": checks})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol around `lifespan(settings)`."""
        async with contextlib.AsyncExitStack() as stack:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        self.parts = await stack.enter_async_context(lifespan(self.settings))
                    except Exception as exc:
                        logger.exception("ingress failed to start")
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    s = self.settings
                    tools = len(self.parts.current.catalog.tools)
                    logger.info(
                        "ingress %s serving MCP at http://%s:%d%s with %d tools",
                        s.replica_id,
                        s.host,
                        s.port,
                        s.path,
                        tools,
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.parts = None
                    await stack.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return


def create_app(settings: IngressSettings) -> Ingress:
    return Ingress(settings)
