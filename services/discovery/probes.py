"""A probe per desired server: it lists the server now, again every refresh interval, at once when the server
says its lists changed, and with backoff while it fails; once the server answers, a listener holds its event
stream open. From the probes' latest listings come the records as they should be now."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from services.discovery.collisions import resolve_collisions
from services.discovery.config import DiscoverySettings
from services.discovery.listener import Listener
from services.discovery.lister import list_server
from shared import labels
from shared.mcpserver import MCPServer
from shared.messages import ServerRecord, ServerState
from shared.metrics import LIST_DURATION, UPSTREAM_CONNECT_ERRORS, Metrics
from shared.naming import prefix_for
from shared.upstream import StatusError
from shared.valkey import Outbox

logger = logging.getLogger(__name__)


def _adoptable(record: ServerRecord | None, server: MCPServer) -> ServerRecord | None:
    if record is None or record.state != "Connected" or record.spec != server.spec:
        return None
    return record.model_copy(update={"exposed": True, "error": None})  # collisions are decided again


@dataclass
class Probe:
    server: MCPServer
    task: "asyncio.Task[None] | None" = None
    listener: Listener | None = None
    listening: "asyncio.Task[None] | None" = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # list again now: the server said its lists changed
    good: ServerRecord | None = None  # the last successful listing
    failing_since: float | None = None
    error: str | None = None
    failures: int = 0
    attempts: int = 0
    unauthorized: bool = False  # the last listing was answered 401: each user must log in (or bring a token)

    def stop(self) -> None:
        for task in (self.task, self.listening):
            if task is not None:
                task.cancel()

    def failed(self, exc: BaseException) -> None:
        self.unauthorized = isinstance(exc, StatusError) and exc.status == 401
        self.failures += 1
        self.error = str(exc) or type(exc).__name__
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            logger.warning("server %s cannot be listed: %s", self.server.name, self.error)

    def listed(self, listing: ServerRecord) -> None:
        if self.failing_since is not None:
            logger.info("server %s is back", self.server.name)
        self.good, self.failing_since, self.error, self.failures = listing, None, None, 0
        self.unauthorized = False


class Probes:
    def __init__(self, settings: DiscoverySettings, outbox: Outbox, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.outbox = outbox
        metrics = metrics if metrics is not None else Metrics("discovery")
        self._listed = metrics.histogram(LIST_DURATION)
        self._connect_errors = metrics.counter(UPSTREAM_CONNECT_ERRORS)
        self.probes: dict[str, Probe] = {}
        self.changed = asyncio.Event()  # a listing changed: the records may have to be published again

    def apply(self, desired: dict[str, MCPServer], published: Mapping[str, ServerRecord] | None = None) -> None:
        """Start, restart or stop probes so that they match the desired servers.

        A new probe adopts the record `published` holds for the same spec as its last good listing, so that a
        restarted discovery (or a new leader) changes nothing agents see: a server that is up stays listed, and
        one that is down keeps its grace period, instead of every server flapping to "Connecting"."""
        for name in list(self.probes):
            if name not in desired:
                self.probes.pop(name).stop()
                logger.info("server %s removed", name)
        for name, server in desired.items():
            probe = self.probes.get(name)
            if probe is not None and probe.server.spec == server.spec:
                continue
            if probe is not None:
                probe.stop()
                logger.info("server %s changed", name)
            else:
                logger.info("server %s added", name)
            probe = self.probes[name] = Probe(server, good=_adoptable((published or {}).get(name), server))
            probe.task = asyncio.create_task(self._probe(probe))
        self.changed.set()

    def stop_all(self) -> None:
        for probe in self.probes.values():
            probe.stop()
        self.probes = {}

    def subscriptions_changed(self, server: str | None = None) -> None:
        """Who subscribes to a server's resources (to every server's, with None) may have changed."""
        for probe in self.probes.values():
            if probe.listener is not None and server in (None, probe.server.name):
                probe.listener.changed.set()

    def _relist(self, name: str) -> None:
        probe = self.probes.get(name)
        if probe is not None:
            probe.wake.set()

    async def _probe(self, probe: Probe) -> None:
        s = self.settings
        while True:
            probe.attempts += 1
            started = time.perf_counter()
            try:
                listing = await asyncio.wait_for(list_server(probe.server, s.list_timeout), s.list_timeout + 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - however listing fails, it is the server's state to report
                self._observe(probe.server.name, started, exc)
                probe.failed(exc)
                delay = min(s.retry_max_seconds, 0.5 * 2 ** min(probe.failures, 10))
            else:
                self._observe(probe.server.name, started, None)
                probe.listed(listing)
                delay = s.refresh_seconds
                self._listen(probe)
            self.changed.set()
            probe.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probe.wake.wait(), delay)

    def _observe(self, server: str, started: float, failure: Exception | None) -> None:
        # Servers are the desired ones: a handful, each named by an operator, so the label stays bounded.
        self._listed.labels(server, "ok" if failure is None else "error").observe(time.perf_counter() - started)
        if failure is not None:
            self._connect_errors.labels(server, labels.connect_error_class(failure)).inc()

    def _listen(self, probe: Probe) -> None:
        if probe.listener is None and probe.server.spec.url:
            probe.listener = Listener(probe.server, self.outbox, self._relist)
            probe.listening = asyncio.create_task(probe.listener.run())

    def records(self) -> dict[str, ServerRecord]:
        """The records as they should be now: one per desired server."""
        now = time.monotonic()
        result = {name: self._record(self.probes[name], now) for name in sorted(self.probes)}
        return resolve_collisions(result)

    def _record(self, probe: Probe, now: float) -> ServerRecord:
        s = self.settings
        name, spec = probe.server.name, probe.server.spec
        prefix = prefix_for(name, spec.tool_prefix, s.prefix_mode, len(self.probes))
        source: Literal["filesystem", "kubernetes"] = "kubernetes" if s.source == "kubernetes" else "filesystem"
        if probe.good is not None and (probe.failing_since is None or now - probe.failing_since < s.grace_seconds):
            return probe.good.model_copy(update={"prefix": prefix, "error": probe.error, "source": source})
        state: ServerState = "Connecting" if probe.attempts <= 1 and probe.error is None else "Failed"
        if probe.unauthorized:
            state = "Auth Required"
        return ServerRecord(
            name=name,
            url=spec.url or "",
            state=state,
            error=probe.error,
            prefix=prefix,
            headers=spec.headers or {},
            timeout=float(spec.timeout),
            spec=spec,
            source=source,
        )
