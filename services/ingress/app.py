"""The ingress ASGI application: the MCP endpoint, health, readiness and metrics on one port.

`create_app(settings)` returns the application; its lifespan builds every resource (Valkey connections, the
reply and broadcast readers) at startup and closes them at shutdown.
"""

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

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
from services.ingress.http import Allow, Head, Receive, Scope, Send, respond, respond_text
from services.ingress.identity_auth import IdentityAuth
from services.ingress.inputs import Inputs
from services.ingress.meta import Meta
from services.ingress.oauth.app import PATHS, OAuthApp, attach
from services.ingress.oauth.app import create_app as create_oauth_app
from services.ingress.oauth.authority import Authority, build
from services.ingress.oauth.config import OAuthSettings
from services.ingress.sessions import Sessions
from services.ingress.tapes import Tapes
from services.ingress.telemetry import Telemetry
from services.ingress.visibility import Visibility
from shared import errors, health, streams
from shared.health import Health
from shared.identity.errors import ProviderUnavailable
from shared.instruments import IngressInstruments
from shared.labels import LabelBounds
from shared.logs import PrincipalHasher
from shared.messages import LoginChanged
from shared.metrics import CATALOG_ENTRIES, GET_STREAMS_OPEN, PENDING_CALLS, SESSIONS_OPEN, Metrics, Samples
from shared.tracing import Tracing
from shared.valkey import Outbox, connect

logger = logging.getLogger(__name__)

STARTUP_PATIENCE = 60.0  # seconds the ingress waits for its identity provider at startup
START_BACKOFF_MAX = 2.0
NOT_LOADED = errors.ServiceUnavailable("muster is starting: its catalog is not loaded yet; retry shortly", 1)


class NotReady(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Parts:
    """What the lifespan builds, for the requests served while it lasts."""

    client: Redis
    calls: Calls
    current: CurrentCatalog
    get_streams: GetStreams
    sessions: Sessions
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


async def principal_key(settings: IngressSettings, client: Redis) -> bytes:
    """The key of the principal's hash in log lines: configured, or one random key that all replicas share."""
    if settings.log_hash_key is not None:
        return settings.log_hash_key.get_secret_value().encode()
    await client.set(streams.LOG_HASH_KEY, secrets.token_bytes(32), nx=True)
    key = await client.get(streams.LOG_HASH_KEY)
    if not isinstance(key, bytes):  # deleted between the two commands: this replica's own key, until its next start
        return secrets.token_bytes(32)
    return key


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
        # This replica at once (the browser's next step may be the agent's next request here); the others, and
        # the workers' cached tokens, through the control stream.
        await visibility.relist(subject, server)
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
async def lifespan(
    settings: IngressSettings, metrics: Metrics, bounds: LabelBounds, oauth: OAuthSettings | None = None
) -> AsyncIterator[Parts]:
    name = f"muster-ingress-{settings.replica_id}"
    client = connect(settings.valkey_url, max_connections=256, name=name, timeout=settings.valkey_timeout)
    outbox = Outbox(settings.valkey_url, name=f"{name}-out", timeout=settings.valkey_timeout)
    tracing = Tracing.configured(settings.tracing, "ingress")
    instruments = IngressInstruments(metrics, bounds) if settings.call_metrics else None
    telemetry = Telemetry(metrics, bounds, instruments, None, tracing)  # the log's hasher once Valkey answers
    get_streams = GetStreams(telemetry.notified)
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
        max_pending_per_server=settings.max_pending_per_server,
        fair_share=settings.fair_share,
        # Valkey may run an ENQUEUE this long after it was written (a busy Valkey); later, it is refused (a
        # Valkey that was frozen: its caller was answered long ago)
        enqueue_seconds=settings.valkey_timeout * 10,
        asked=sessions.ask,
    )
    current = CurrentCatalog(instruments.catalog_changed if instruments is not None else bounds.update)
    visibility = Visibility(current, calls, client, settings.replica_id, listing_seconds=settings.listing_seconds)
    broadcasts = Broadcasts(client, current, get_streams, sessions, visibility)
    tapes = Tapes(client, outbox, keep=settings.resume_seconds, block_ms=int(settings.keepalive_seconds * 1000))
    forwarder = Forwarder(calls, outbox, tapes, sessions, settings.replica_id, settings.call_timeout, telemetry)
    inputs = Inputs(forwarder, tapes, calls)
    auth_state: AuthState = PlainAuth() if oauth is None else IdentityAuth(visibility, outbox)
    meta = Meta(settings.expose, forwarder, auth_state)
    handlers = Handlers(sessions, current, forwarder, outbox, meta, visibility)
    tasks: list[asyncio.Task[None]] = []
    try:
        async with identity(oauth, outbox, visibility) as auth:
            bearer = Bearer(auth[0].guard) if auth is not None else None
            endpoint = Endpoint(settings, sessions, handlers, get_streams, tapes, telemetry, bearer)
            started = _start_when_valkey_answers(settings, client, telemetry, broadcasts)
            loops = (calls.read_replies(), calls.sweep(), started, calls.beat(settings.heartbeat_seconds))
            tasks = [asyncio.create_task(t) for t in loops]
            yield Parts(client, calls, current, get_streams, sessions, endpoint, auth[1] if auth is not None else None)
    finally:
        visibility.background.cancel()
        inputs.close()
        get_streams.close_all()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await calls.close()
        await client.aclose()
        outbox.close()
        tracing.shutdown()


async def _start_when_valkey_answers(
    settings: IngressSettings, client: Redis, telemetry: Telemetry, broadcasts: Broadcasts
) -> None:
    """Loads the log's hash key and the catalog, waiting for Valkey if it is away when the ingress starts (not
    ready and no call taken meanwhile), then follows the broadcast streams."""
    failures = 0
    while True:
        try:
            if settings.call_log and telemetry.hasher is None:
                telemetry.hasher = PrincipalHasher(await principal_key(settings, client))
            await broadcasts.start()
            break
        except (RedisError, OSError) as exc:
            failures += 1
            if failures == 1:
                logger.warning("valkey unreachable at start: %s; waiting for it", exc)
            await asyncio.sleep(min(START_BACKOFF_MAX, 0.25 * failures))
    await broadcasts.run()


class Ingress:
    def __init__(self, settings: IngressSettings, oauth: OAuthSettings | None = None) -> None:
        self.settings = with_public_url(settings, oauth) if oauth is not None else settings
        self.oauth = oauth
        self.hosts = Allow(self.settings.allowed_hosts)
        self.metrics = Metrics("ingress")
        self.bounds = LabelBounds()
        self.health = Health(self.metrics.registry)
        self.health.check("valkey", self._valkey)
        self.health.check("catalog", self._catalog)
        self.health.check("draining", self._draining)
        self.parts: Parts | None = None
        self.metrics.sample(PENDING_CALLS, lambda: {(): len(self.parts.calls.pending)} if self.parts else {})
        self.metrics.sample(SESSIONS_OPEN, lambda: {(): self.parts.sessions.cached()} if self.parts else {})
        self.metrics.sample(GET_STREAMS_OPEN, lambda: {(): len(self.parts.get_streams.queues)} if self.parts else {})
        self.metrics.sample(CATALOG_ENTRIES, self._catalog_entries)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, parts = scope["path"], self.parts
            if parts is not None and parts.calls.draining:
                send = _closing(send)
            if path == self.settings.path and parts is not None:
                if parts.calls.draining and scope["method"] == "GET":  # an event stream would hold the drain up
                    await respond_text(send, 503, "this muster replica is shutting down", [(b"retry-after", b"1")])
                elif not parts.current.loaded:  # Valkey was away when the ingress started: nothing to serve yet
                    await respond(send, NOT_LOADED.status, NOT_LOADED.response(b"null"), headers=NOT_LOADED.headers)
                else:
                    await parts.endpoint(scope, receive, send)
            elif parts is not None and parts.oauth is not None and path.startswith(PATHS):
                await self.authorization_server(parts.oauth, scope, receive, send)
            elif path in health.PATHS:
                await self.health(scope, receive, cast(health.Send, send))
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

    async def _draining(self) -> None:
        if self.parts is not None and self.parts.calls.draining:
            raise NotReady("shutting down: no new calls")

    async def _valkey(self) -> None:
        if self.parts is None:
            raise NotReady("not started")
        await self.parts.client.ping()

    async def _catalog(self) -> None:
        if self.parts is None or not self.parts.current.loaded:
            raise NotReady("not loaded yet")

    def _catalog_entries(self) -> Samples:
        if self.parts is None:
            return {}
        catalog = self.parts.current.catalog
        return {
            ("tools",): len(catalog.tools),
            ("resources",): len(catalog.resources),
            ("resource_templates",): len(catalog.templates),
            ("prompts",): len(catalog.prompts),
        }

    async def drain(self, grace: float) -> None:
        """SIGTERM: take no new call (readiness false), let the calls in flight finish within `grace` seconds,
        then answer what is left with an error its caller can act on."""
        parts = self.parts
        if parts is None or parts.calls.draining:
            return
        parts.calls.draining = True
        parts.get_streams.close_all()  # their clients reconnect, to another replica
        logger.info("draining: %d calls in flight, no new ones taken", len(parts.calls.pending))
        await parts.calls.settle(grace)
        self.abandon()

    def abandon(self) -> None:
        """Answers at once every call still in flight (the end of a drain, or a second signal)."""
        if self.parts is not None:
            self.parts.calls.draining = True
            left = self.parts.calls.abandon()
            if left:
                logger.warning("drained: %d calls were still in flight, answered as cancelled", left)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol around `lifespan(settings)`."""
        async with contextlib.AsyncExitStack() as stack:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        self.parts = await stack.enter_async_context(
                            lifespan(self.settings, self.metrics, self.bounds, self.oauth)
                        )
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


def _closing(send: Send) -> Send:
    """While draining, every response closes its connection: a connection left idle and open would be closed under
    a client that sends on it at that moment, with no way to tell whether its request was taken."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return sending


def create_app(settings: IngressSettings, oauth: OAuthSettings | None = None) -> Ingress:
    """`oauth`: with auth on, the authorization server's settings."""
    return Ingress(settings, oauth)
