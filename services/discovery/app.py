"""Discovery: keeps the catalog in Valkey equal to what the configured servers offer.

Each server has a probe task that lists it now, again every refresh interval, and with backoff while it
fails. The main loop turns the desired servers and the latest listings into catalog entries (names, prefixes,
collisions, grace for flapping servers), writes the entries that changed, and announces them.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.discovery.config import DiscoverySettings
from services.discovery.folder import Folder
from services.discovery.leader import Lease
from services.discovery.listener import Listener
from services.discovery.lister import list_server
from shared import catalog, streams
from shared.lifecycle import instance_id
from shared.mcpserver import MCPServer
from shared.messages import CapabilityChange, Control, ServerCatalog, ServerState, decode, encode
from shared.naming import expose, prefix_for
from shared.valkey import Outbox, connect

logger = logging.getLogger(__name__)

RESUBSCRIBE_SECONDS = 30.0


@dataclass
class Probe:
    server: MCPServer
    task: "asyncio.Task[None] | None" = None
    listener: Listener | None = None
    listening: "asyncio.Task[None] | None" = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # list again now: the server said its lists changed
    good: ServerCatalog | None = None  # the last successful listing
    failing_since: float | None = None
    error: str | None = None
    failures: int = 0
    attempts: int = 0


@dataclass
class Discovery:
    settings: DiscoverySettings
    client: Redis
    holder: str = field(default_factory=instance_id)
    probes: dict[str, Probe] = field(default_factory=dict)
    published: dict[str, ServerCatalog] = field(default_factory=dict)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    groups: set[str] = field(default_factory=set)
    folder: Folder = field(init=False)

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.settings.valkey_url, name="muster-discovery-out")

    async def run(self) -> None:
        self.folder = Folder(self.settings.servers)
        lease = Lease(self.client, self.holder, self.settings.leader_ttl_seconds)
        control = asyncio.create_task(self._watch_control())
        renew_at = 0.0
        try:
            while True:
                try:
                    if time.monotonic() >= renew_at:
                        renew_at = time.monotonic() + self.settings.leader_ttl_seconds / 3
                        if not await self._lead(lease):
                            await asyncio.sleep(self.settings.leader_ttl_seconds / 3)
                            continue
                    if self.folder.changed():
                        self.apply(self.folder.read())
                    if self.dirty.is_set():
                        self.dirty.clear()
                        await self.publish()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.dirty.wait(), self.settings.poll_seconds)
                except (RedisError, ConnectionError, OSError) as exc:
                    logger.warning("valkey unreachable: %s; trying again", exc)
                    self.dirty.set()  # whatever was to be published still is
                    renew_at = 0.0
                    await asyncio.sleep(1.0)
        finally:
            control.cancel()
            self._stop_probes()
            with contextlib.suppress(RedisError, ConnectionError, OSError):
                await lease.release()

    async def _lead(self, lease: Lease) -> bool:
        """Renews the lease; as leader, notices a catalog that Valkey lost. False while another one leads."""
        if not await lease.renew():
            if self.probes:  # lost the lead: the next leader owns the servers now
                self._stop_probes()
                self.folder, self.published = Folder(self.settings.servers), {}
            return False
        if not self.published:
            self.published = {k: v for k, v in (await catalog.load(self.client)).items() if v is not None}
        elif await self.client.hlen(streams.CATALOG) < len(self.published):
            # Valkey lost its data (restarted without persistence): publish everything again, consumer groups
            # first, and let the listeners subscribe again.
            logger.warning("the catalog in valkey is gone; publishing it again")
            self.published, self.groups = {}, set()
            self.subscriptions_changed()
            self.dirty.set()
        return True

    async def _watch_control(self) -> None:
        """Subscription changes from the ingress, and a full resubscription now and then to heal a missed one."""
        last: Any = await self.client.xrevrange(streams.CONTROL, count=1)
        cursor = last[0][0] if last else b"0-0"
        resync_at = time.monotonic() + RESUBSCRIBE_SECONDS
        while True:
            try:
                response: Any = await self.client.xread({streams.CONTROL: cursor}, count=100, block=1000)
                for _, entries in response:
                    for entry_id, fields in entries:
                        cursor = entry_id
                        control = decode(fields, Control)
                        if control.kind == "subscriptions":
                            self.subscriptions_changed(control.key)
                if time.monotonic() >= resync_at:
                    resync_at = time.monotonic() + RESUBSCRIBE_SECONDS
                    self.subscriptions_changed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("reading control events failed: %s", exc)
                await asyncio.sleep(0.5)

    def apply(self, desired: dict[str, MCPServer]) -> None:
        """Start, restart or stop probes so that they match the desired servers."""
        for name in list(self.probes):
            if name not in desired:
                self._stop(name)
                logger.info("server %s removed", name)
        for name, server in desired.items():
            probe = self.probes.get(name)
            if probe is not None and probe.server.spec == server.spec:
                continue
            if probe is not None:
                self._stop(name)
                logger.info("server %s changed", name)
            else:
                logger.info("server %s added", name)
            probe = self.probes[name] = Probe(server)
            probe.task = asyncio.create_task(self._probe(probe))
        self.dirty.set()

    def _stop(self, name: str) -> None:
        probe = self.probes.pop(name)
        for task in (probe.task, probe.listening):
            if task is not None:
                task.cancel()

    def _listen(self, probe: Probe) -> None:
        if probe.listener is None and probe.server.spec.url:
            probe.listener = Listener(probe.server, self.outbox, self._relist)
            probe.listening = asyncio.create_task(probe.listener.run())

    def _relist(self, name: str) -> None:
        probe = self.probes.get(name)
        if probe is not None:
            probe.wake.set()

    def subscriptions_changed(self, name: str | None = None) -> None:
        for probe in self.probes.values():
            if probe.listener is not None and name in (None, probe.server.name):
                probe.listener.changed.set()

    def _stop_probes(self) -> None:
        for name in list(self.probes):
            self._stop(name)

    async def _probe(self, probe: Probe) -> None:
        s = self.settings
        while True:
            probe.attempts += 1
            try:
                listing = await asyncio.wait_for(list_server(probe.server, s.list_timeout), s.list_timeout + 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                probe.failures += 1
                probe.error = str(exc) or type(exc).__name__
                if probe.failing_since is None:
                    probe.failing_since = time.monotonic()
                    logger.warning("server %s cannot be listed: %s", probe.server.name, probe.error)
                delay = min(s.retry_max_seconds, 0.5 * 2 ** min(probe.failures, 10))
            else:
                if probe.failing_since is not None:
                    logger.info("server %s is back", probe.server.name)
                probe.good, probe.failing_since, probe.error, probe.failures = listing, None, None, 0
                delay = s.refresh_seconds
                self._listen(probe)
            self.dirty.set()
            probe.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probe.wake.wait(), delay)

    def entries(self) -> dict[str, ServerCatalog]:
        """The catalog as it should be now: one entry per desired server."""
        s = self.settings
        now = time.monotonic()
        count = len(self.probes)
        result: dict[str, ServerCatalog] = {}
        for name in sorted(self.probes):
            probe = self.probes[name]
            spec = probe.server.spec
            prefix = prefix_for(name, spec.tool_prefix, s.prefix_mode, count)
            if probe.good is not None and (probe.failing_since is None or now - probe.failing_since < s.grace_seconds):
                entry = probe.good.model_copy(update={"prefix": prefix, "error": probe.error})
            else:
                state: ServerState = "Connecting" if probe.attempts <= 1 and probe.error is None else "Failed"
                entry = ServerCatalog(
                    name=name,
                    url=spec.url or "",
                    state=state,
                    error=probe.error,
                    prefix=prefix,
                    headers=spec.headers or {},
                    timeout=float(spec.timeout),
                )
            result[name] = entry
        return _resolve_collisions(result)

    async def publish(self) -> None:
        wanted = self.entries()
        changed = [e for n, e in wanted.items() if _content(self.published.get(n)) != _content(e)]
        removed = [n for n in self.published if n not in wanted]
        if not changed and not removed:
            return
        for entry in changed:
            if entry.name not in self.groups:
                await self._ensure_group(entry.name)
        stored = [
            e.model_copy(update={"revision": (self.published[e.name].revision + 1) if e.name in self.published else 1})
            for e in changed
        ]
        await catalog.store(self.client, stored, removed)
        change = CapabilityChange(servers=sorted([e.name for e in stored] + removed))
        await self.client.xadd(streams.CAPABILITIES, encode(change), maxlen=streams.EVENTS_MAXLEN, approximate=True)  # type: ignore[arg-type]
        for entry in stored:
            self.published[entry.name] = entry
            logger.info(
                "catalog: %s %s, %d tools, %d resources, %d prompts%s",
                entry.name,
                entry.state,
                len(entry.tools),
                len(entry.resources),
                len(entry.prompts),
                f" (not exposed: {entry.error})" if not entry.exposed else "",
            )
        for name in removed:
            del self.published[name]
            logger.info("catalog: %s removed", name)

    async def _ensure_group(self, name: str) -> None:
        # Created at 0 before any call can be routed to the server, so that no call waits in a stream
        # that no group reads (FastStream would create it at $ and skip what is already there).
        try:
            await self.client.xgroup_create(streams.calls(name), streams.GROUP_WORKERS, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.groups.add(name)


def _content(entry: ServerCatalog | None) -> object:
    return None if entry is None else entry.model_dump(exclude={"revision"})


def _resolve_collisions(entries: dict[str, ServerCatalog]) -> dict[str, ServerCatalog]:
    """A server whose names would shadow another's is not exposed at all, and says why."""
    owners: dict[tuple[str, str], str] = {}
    result = {}
    for name, entry in entries.items():
        if entry.state != "Connected":
            result[name] = entry
            continue
        mine = [("tool", expose(entry.prefix, t["name"])) for t in entry.tools]
        mine += [("prompt", expose(entry.prefix, p["name"])) for p in entry.prompts]
        clash = next((k for k in mine if k in owners), None)
        if clash is None and len(set(mine)) < len(mine):
            clash = next(k for k in mine if mine.count(k) > 1)
        if clash is not None:
            other = owners.get(clash, name)
            error = (
                f"{clash[0]} name {clash[1]!r} collides with server {other!r}; the server is not exposed "
                f"(set spec.toolPrefix or use prefix mode always)"
            )
            result[name] = entry.model_copy(update={"exposed": False, "error": error})
            continue
        for key in mine:
            owners[key] = name
        result[name] = entry
    return result


async def serve(settings: DiscoverySettings) -> None:
    client = connect(settings.valkey_url, name="muster-discovery")
    discovery = Discovery(settings, client)
    try:
        await discovery.run()
    finally:
        await client.aclose()
