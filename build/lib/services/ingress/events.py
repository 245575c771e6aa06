"""What reaches the ingress from outside a request: catalog changes, ended sessions, and the GET streams that
carry notifications to the clients connected to this replica."""

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis

from services.ingress.sessions import Sessions
from shared import catalog, streams
from shared.catalog import CatalogView
from shared.messages import CapabilityChange, Control, ServerCatalog, decode

logger = logging.getLogger(__name__)

RELOAD_SECONDS = 30.0
LIST_CHANGED = {
    "tools": b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}',
    "resources": b'{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}',
    "prompts": b'{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}',
}
_CLOSE = b""


class Listeners:
    """The GET streams open on this replica, by session id."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[bytes]] = {}

    def open(self, session_id: str) -> "asyncio.Queue[bytes] | None":
        if session_id in self.queues:
            return None
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
        self.queues[session_id] = queue
        return queue

    def release(self, session_id: str, queue: "asyncio.Queue[bytes]") -> None:
        if self.queues.get(session_id) is queue:
            del self.queues[session_id]

    def send(self, session_id: str, message: bytes) -> bool:
        queue = self.queues.get(session_id)
        if queue is None:
            return False
        try:
            queue.put_nowait(message)
        except asyncio.QueueFull:  # a client that reads nothing loses notifications, not the replica's memory
            return False
        return True

    def broadcast(self, message: bytes) -> None:
        for session_id in list(self.queues):
            self.send(session_id, message)

    def close(self, session_id: str) -> None:
        self.send(session_id, _CLOSE)

    def close_all(self) -> None:
        for session_id in list(self.queues):
            self.close(session_id)


class Catalog:
    """The current catalog view, replaced whole on every change."""

    def __init__(self) -> None:
        self.entries: dict[str, ServerCatalog] = {}
        self.view = CatalogView(())
        self.loaded = False

    def update(self, entries: dict[str, ServerCatalog | None]) -> set[str]:
        """Apply changed entries; returns which lists changed: tools, resources, prompts."""
        merged = dict(self.entries)
        for name, entry in entries.items():
            if entry is None:
                merged.pop(name, None)
            else:
                merged[name] = entry
        old, new = self.view, CatalogView(merged.values())
        self.entries, self.view = merged, new
        changed = set()
        if old.tools_json != new.tools_json:
            changed.add("tools")
        if old.resources_json != new.resources_json or old.templates_json != new.templates_json:
            changed.add("resources")
        if old.prompts_json != new.prompts_json:
            changed.add("prompts")
        return changed


class Events:
    def __init__(self, client: Redis, catalog: Catalog, listeners: Listeners, sessions: Sessions) -> None:
        self.client = client
        self.catalog = catalog
        self.listeners = listeners
        self.sessions = sessions

    async def _last_id(self, stream: str) -> bytes:
        last: Any = await self.client.xrevrange(stream, count=1)
        return last[0][0] if last else b"0-0"

    async def start(self) -> None:
        self.cursor = {
            streams.CAPABILITIES: await self._last_id(streams.CAPABILITIES),
            streams.CONTROL: await self._last_id(streams.CONTROL),
        }
        await self.reload()

    async def reload(self) -> None:
        entries: dict[str, ServerCatalog | None] = dict(await catalog.load(self.client))
        for gone in set(self.catalog.entries) - set(entries):
            entries[gone] = None
        self._changed(self.catalog.update(entries))
        self.catalog.loaded = True

    def _changed(self, lists: set[str]) -> None:
        for name in sorted(lists):
            self.listeners.broadcast(LIST_CHANGED[name])
        if lists:
            logger.info("catalog changed: %s; %d tools", ", ".join(sorted(lists)), len(self.catalog.view.tools))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reload_at = loop.time() + RELOAD_SECONDS
        while True:
            try:
                response: Any = await self.client.xread(self.cursor, count=100, block=1000)  # type: ignore[arg-type]
                for stream, entries in response:
                    name = stream.decode()
                    for entry_id, fields in entries:
                        self.cursor[name] = entry_id
                        await self._handle(name, fields)
                if loop.time() >= reload_at:  # heals an event missed while Valkey was unreachable
                    reload_at = loop.time() + RELOAD_SECONDS
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("reading catalog and control events failed: %s", exc)
                await asyncio.sleep(0.5)

    async def _handle(self, stream: str, fields: dict[bytes, bytes]) -> None:
        if stream == streams.CAPABILITIES:
            change = decode(fields, CapabilityChange)
            entries = await catalog.load(self.client, change.servers)
            self._changed(self.catalog.update(entries))
        else:
            control = decode(fields, Control)
            if control.kind == "session-ended":
                self.sessions.forget(control.key)
                self.listeners.close(control.key)
