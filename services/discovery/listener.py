"""What a server announces outside any call, heard on one long-lived session per server.

Its GET stream brings `notifications/resources/updated` (fanned out to every subscribed client session,
through the ingress replica that holds that session's GET stream) and `notifications/*/list_changed` (which
makes discovery list the server again at once). The session subscribes upstream to every resource that at
least one client is subscribed to; workers' own sessions are for calls and are never listened to, so each
update reaches each subscriber once.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from shared import errors, streams
from shared.http1 import HttpError, Pool
from shared.lifecycle import Background
from shared.mcpserver import MCPServer
from shared.messages import SessionEvent
from shared.upstream import UpstreamFailure, UpstreamSession, wire_headers
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

LIST_CHANGED = (
    "notifications/tools/list_changed",
    "notifications/resources/list_changed",
    "notifications/prompts/list_changed",
)


class Listener:
    def __init__(self, server: MCPServer, outbox: Outbox, on_list_changed: Callable[[str], None]) -> None:
        assert server.spec.url is not None
        self.name = server.name
        self.outbox = outbox
        self.on_list_changed = on_list_changed
        self.pool = Pool(server.spec.url, connect_timeout=float(server.spec.timeout))
        # It declares no client capabilities: nobody is behind this session to answer a server's request.
        self.session = UpstreamSession(self.pool, wire_headers(server.spec.headers), capabilities={})
        self.subscribed: set[str] = set()
        self.changed = asyncio.Event()  # the wanted subscriptions may have changed
        self.changed.set()
        self.background = Background()

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    await self.session.ensure_open(asyncio.get_running_loop().time() + 30)
                    self.subscribed.clear()
                    syncing = asyncio.create_task(self._sync_forever())
                    try:
                        response = await self.session.listen(self._on_message)
                    finally:
                        syncing.cancel()
                    if response.status in (404, 405):  # no GET stream: nothing to hear, ask again much later
                        logger.info("%s offers no event stream (HTTP %d)", self.name, response.status)
                        await asyncio.sleep(300)
                    failures = 0
                except (HttpError, UpstreamFailure, OSError) as exc:
                    failures += 1
                    logger.info("listening to %s failed: %s", self.name, exc)
                self.session.reset()
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
        finally:
            self.pool.close()

    def _on_message(self, message: dict[str, Any], data: bytes) -> None:
        method = message.get("method")
        if "id" in message:  # a request outside any call, such as a ping: answered here, nobody else can
            body = b'"result":{}' if method == "ping" else b'"error":' + errors.MethodNotFound("not supported").body()
            self.background.spawn(self.session.respond(message["id"], body))
        elif method == "notifications/resources/updated":
            uri = (message.get("params") or {}).get("uri")
            if isinstance(uri, str):
                self.background.spawn(self.fan_out(uri, data))
        elif method in LIST_CHANGED:
            self.on_list_changed(self.name)

    async def fan_out(self, uri: str, notification: bytes) -> None:
        out = self.outbox
        members = streams.subscribers(self.name, uri)
        for session in await out.send(b"SMEMBERS", members):
            key = streams.session(session.decode())
            replica, exists = await out.send(b"HGET", key, b"stream"), await out.send(b"EXISTS", key)
            if not exists:  # the session ended without saying so: forget its subscription
                out.post(b"SREM", members, session)
            elif replica is not None:  # with no GET stream open there is nowhere to deliver, as the protocol allows
                out.reply(replica, SessionEvent(session, notification))

    async def _sync_forever(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()
            try:
                await self.sync()
            except (HttpError, UpstreamFailure) as exc:
                logger.warning("subscribing at %s failed: %s", self.name, exc)
                await asyncio.sleep(1)
                self.changed.set()

    async def sync(self) -> None:
        """Subscribe upstream to what clients are subscribed to, and unsubscribe from what nobody is."""
        out = self.outbox
        wanted = set()
        for raw in await out.send(b"SMEMBERS", streams.subscribed(self.name)):
            uri = raw.decode()
            if await out.send(b"SCARD", streams.subscribers(self.name, uri)):
                wanted.add(uri)
            else:
                out.post(b"SREM", streams.subscribed(self.name), uri)
        deadline = asyncio.get_running_loop().time() + 10
        for uri in sorted(wanted - self.subscribed):
            await self.session.request(b"resources/subscribe", orjson.dumps({"uri": uri}), deadline)
            self.subscribed.add(uri)
        for uri in sorted(self.subscribed - wanted):
            await self.session.request(b"resources/unsubscribe", orjson.dumps({"uri": uri}), deadline)
            self.subscribed.discard(uri)
