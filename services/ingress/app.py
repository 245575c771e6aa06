"""The ingress ASGI application: the MCP endpoint, health, readiness and metrics on one port."""

import asyncio
import logging
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from services.ingress.calls import Calls
from services.ingress.config import IngressSettings
from services.ingress.events import Catalog, Events, Listeners
from services.ingress.http import Receive, Send, respond, respond_json, respond_text
from services.ingress.mcp import Mcp
from services.ingress.methods import Methods
from services.ingress.sessions import Sessions
from shared.valkey import Outbox, connect

logger = logging.getLogger(__name__)


class Ingress:
    def __init__(self, settings: IngressSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self._tasks: list[asyncio.Task[None]] = []
        self.mcp: Mcp | None = None

    async def startup(self) -> None:
        s = self.settings
        self.client = connect(s.valkey_url, max_connections=256, name=f"muster-ingress-{s.replica_id}")
        outbox = Outbox(s.valkey_url, name=f"muster-ingress-{s.replica_id}-out")
        self.sessions = Sessions(outbox, s.replica_id, s.session_ttl, s.session_recheck)
        self.calls = Calls(
            self.client,
            outbox,
            s.replica_id,
            queue_limit=s.queue_limit,
            max_pending=s.max_pending,
            retry_after=s.retry_after,
        )
        self.catalog = Catalog()
        self.listeners = Listeners()
        self.calls.on_session = self.listeners.send
        self.events = Events(self.client, self.catalog, self.listeners, self.sessions)
        await self.events.start()
        self.mcp = Mcp(s, self.sessions, Methods(s, self.sessions, self.calls, self.catalog), self.listeners)
        self._tasks = [
            asyncio.create_task(t) for t in (self.calls.read_replies(), self.calls.sweep(), self.events.run())
        ]
        Gauge("muster_ingress_pending_calls", "Calls this replica waits for", registry=self.registry).set_function(
            lambda: len(self.calls.pending)
        )
        Gauge("muster_ingress_event_streams", "Open GET event streams", registry=self.registry).set_function(
            lambda: len(self.listeners.queues)
        )
        logger.info(
            "ingress %s serving MCP at http://%s:%d%s with %d tools",
            s.replica_id,
            s.host,
            s.port,
            s.path,
            len(self.catalog.view.tools),
        )

    async def shutdown(self) -> None:
        self.listeners.close_all()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
        self.calls.outbox.close()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == self.settings.path and self.mcp is not None:
                await self.mcp(scope, receive, send)
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
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.client.ping(), 1.0)
            checks["valkey"] = "ok"
        except Exception as exc:
            checks["valkey"] = f"unreachable: {exc or type(exc).__name__}"
        checks["catalog"] = "ok" if self.catalog.loaded else "not loaded yet"
        ok = all(v == "ok" for v in checks.values())
        await respond_json(send, 200 if ok else 503, {"status": "ok" if ok else "not ready", "checks": checks})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("ingress failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: IngressSettings) -> Ingress:
    return Ingress(settings)
