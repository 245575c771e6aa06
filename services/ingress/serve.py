"""The ingress under uvicorn, with a drain on SIGTERM (or SIGINT) before uvicorn's own shutdown.

uvicorn alone closes its listening socket at the first signal and, after `timeout_graceful_shutdown`, cancels
what still runs: a caller then gets a bare HTTP 500 for a call that may well go on running. Here the first
signal drains (Ingress.drain: readiness false, new calls refused with -32006 and Retry-After, calls in flight
finish within drain_seconds, the rest answered with an error that says whether a retry is safe), and only then
lets uvicorn stop. A second signal answers what is left at once and stops.
"""

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from services.ingress.app import Ingress, create_app
from services.ingress.config import IngressSettings
from services.ingress.guard import Limits, guarded
from services.ingress.oauth.config import OAuthSettings
from shared.lifecycle import Background, freeze_heap

logger = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 5  # after the drain: for the last responses to be written


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ingress: Ingress, drain_seconds: float) -> None:
        super().__init__(config)
        self.ingress = ingress
        self.drain_seconds = drain_seconds
        self.signals = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.background = Background()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Called from the signal handler, between two steps of the event loop: work is handed to the loop.
        self.signals += 1
        if self.loop is None or self.should_exit:
            super().handle_exit(sig, frame)
        elif self.signals == 1:
            logger.info("signal %d: draining before stopping (a second signal stops at once)", sig)
            self.loop.call_soon_threadsafe(self.background.spawn, self._drain_then_exit())
        else:
            self.loop.call_soon_threadsafe(self.ingress.abandon)
            self.should_exit = True

    async def _drain_then_exit(self) -> None:
        try:
            await self.ingress.drain(self.drain_seconds)
        finally:
            self.should_exit = True


def run(settings: IngressSettings, oauth: OAuthSettings | None = None) -> None:
    """`oauth`: with auth on, the authorization server's settings."""
    ingress = create_app(settings, oauth)
    freeze_heap()
    limits = Limits(
        idle_timeout=settings.idle_timeout,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        write_timeout=settings.write_timeout,
        max_head_bytes=settings.max_head_bytes,
        max_connections=settings.max_connections,
    )
    config = uvicorn.Config(
        ingress,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded(limits),  # httptools, with bounds on every connection (guard.py)
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        timeout_keep_alive=max(1, round(settings.idle_timeout)),
        proxy_headers=False,  # the ingress reads no client address; the middleware costs on every request
        server_header=False,
        backlog=4096,
    )
    Server(config, ingress, settings.drain_seconds).run()
