"""The ingress ASGI application: the MCP endpoint, health, readiness and metrics on one port.

`create_app(settings)` returns the application; its lifespan builds every resource (Valkey connections, the
reply and broadcast readers) at startup and closes them at shutdown.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.ingress.auth_state import AuthState, PlainAuth
from services.ingress.bearer import Bearer
from services.ingress.broadcasts import Broadcasts
from services.ingress.calls import Calls
from services.ingress.config import IngressSettings
from services.ingress.current import CurrentCatalog
from services.ingress.endpoint import Endpoint
from services.ingress.forward import Forwarder
from services.ingress.get_streams import GetStreams
from services.ingress.handlers import Handlers
from services.ingress.http import Allow, Head, Receive, Scope, Send, respond, respond_json, respond_text
from services.ingress.identity_auth import IdentityAuth
from services.ingress.meta import Meta
from services.ingress.oauth.app import PATHS, OAuthApp, attach
from services.ingress.oauth.app import create_app as create_oauth_app
from services.ingress.oauth.authority import Authority, build
from services.ingress.oauth.config import OAuthSettings
from services.ingress.sessions import Sessions
from services.ingress.visibility import Visibility
from shared import streams
from shared.identity.errors import ProviderUnavailable
from shared.messages import LoginChanged
from shared.valkey import Outbox, connect

logger = logging.getLogger(__name__)

STARTUP_PATIENCE = 60.0  # seconds the ingress waits for its identity provider at startup


@dataclass(frozen=True, slots=True)
class Parts:
    """What the lifespan builds, for the requests served while it lasts."""

    client: Redis
    calls: Calls
    current: CurrentCatalog
    get_streams: GetStreams
    endpoint: Endpoint
    oauth: OAuthApp | None  # with auth on: the authorization server's routes (/.well-known/..., /oauth/...)


def with_public_url(settings: IngressSettings, oauth: OAuthSettings) -> IngressSettings:
    """Clients reach muster at its public URL: its Host and Origin are let in."""
    parts = urlsplit(oauth.issuer)
    return settings.model_copy(
        update={
            "allowed_hosts": [*settings.allowed_hosts, parts.netloc],
            "allowed_origins": [*settings.allowed_origins, f"{parts.scheme}://{parts.netloc}"],
        }
    )


async def build_authority(settings: OAuthSettings, patience: float = STARTUP_PATIENCE) -> Authority:
    """The authorization server; a provider still starting (as next to a Dex deployed with muster) is waited for,
    a while, before the ingress gives up."""
    deadline = asyncio.get_running_loop().time() + patience
    delay = 0.5
    while True:
        try:
            return await build(settings)
        except ProviderUnavailable as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            logger.warning("the identity provider is not reachable yet (%s); trying again in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


@contextlib.asynccontextmanager
async def identity(
    settings: OAuthSettings | None, outbox: Outbox, visibility: Visibility
) -> AsyncIterator[tuple[Authority, OAuthApp] | None]:
    """With auth on: the authorization server, and what a user's login to a server of their own changes."""
    if settings is None:
        yield None
        return
    authority = await build_authority(settings)

    async def on_login(subject: str, server: str) -> None:
        await visibility.forget_listing(subject, server)
        outbox.publish(streams.CONTROL, LoginChanged(subject=subject, server=server))

    authority.on_login = on_login
    app = create_oauth_app(settings)
    attach(app, authority)
    visibility.servers = authority.servers
    try:
        yield authority, app
    finally:
        await authority.close()


@contextlib.asynccontextmanager
async def lifespan(settings: IngressSettings, oauth: OAuthSettings | None = None) -> AsyncIterator[Parts]:
    name = f"muster-ingress-{settings.replica_id}"
    client = connect(settings.valkey_url, max_connections=256, name=name)
    outbox = Outbox(settings.valkey_url, name=f"{name}-out")
    get_streams = GetStreams()
    sessions = Sessions(outbox, settings.replica_id, settings.session_ttl, settings.session_recheck)
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
    visibility = Visibility(current, calls, client, settings.replica_id, listing_seconds=settings.listing_seconds)
    broadcasts = Broadcasts(client, current, get_streams, sessions, visibility)
    forwarder = Forwarder(calls, outbox, settings.replica_id, settings.call_timeout)
    auth_state: AuthState = PlainAuth() if oauth is None else IdentityAuth(visibility, outbox)
    meta = Meta(settings.expose, forwarder, auth_state)
    handlers = Handlers(sessions, current, forwarder, outbox, meta, visibility)
    tasks: list[asyncio.Task[None]] = []
    try:
        async with identity(oauth, outbox, visibility) as auth:
            bearer = Bearer(auth[0].guard) if auth is not None else None
            endpoint = Endpoint(settings, sessions, handlers, get_streams, bearer)
            await broadcasts.start()
            tasks = [asyncio.create_task(t) for t in (calls.read_replies(), calls.sweep(), broadcasts.run())]
            yield Parts(client, calls, current, get_streams, endpoint, auth[1] if auth is not None else None)
    finally:
        visibility.background.cancel()
        get_streams.close_all()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        outbox.close()


class Ingress:
    def __init__(self, settings: IngressSettings, oauth: OAuthSettings | None = None) -> None:
        self.settings = with_public_url(settings, oauth) if oauth is not None else settings
        self.oauth = oauth
        self.hosts = Allow(self.settings.allowed_hosts)
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
            elif parts is not None and parts.oauth is not None and path.startswith(PATHS):
                await self.authorization_server(parts.oauth, scope, receive, send)
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

    async def authorization_server(self, app: OAuthApp, scope: Scope, receive: Receive, send: Send) -> None:
        host = Head(scope).host
        if host and not self.hosts(host):
            await respond_text(send, 421, f"Invalid Host header: {host.decode('latin-1')}")
            return
        await app(scope, receive, send)  # type: ignore[arg-type]  # an ASGI send, typed more narrowly here

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
                        self.parts = await stack.enter_async_context(lifespan(self.settings, self.oauth))
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


def create_app(settings: IngressSettings, oauth: OAuthSettings | None = None) -> Ingress:
    """`oauth`: with auth on, the authorization server's settings."""
    return Ingress(settings, oauth)
