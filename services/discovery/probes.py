"""A probe per desired server: it lists the server now, again every refresh interval, at once when the server
says its lists changed, and with backoff while it fails; once the server answers, a listener holds its event
stream open. From the probes' latest listings come the records as they should be now, and each server's health.

A new probe serves the record published before it (by this process, or by the leader before it) until its own
first attempt ends, so that a restart, a change of leader or a change of spec never takes a server's tools away
for the moment its listing takes. A server whose spec asks for what muster does not do (support.py) is never
probed: it is Failed, and says why.
"""

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from services.discovery.collisions import resolve_collisions
from services.discovery.config import DiscoverySettings
from services.discovery.listener import Listener
from services.discovery.lister import list_server
from services.discovery.status import ServerStatus
from services.discovery.support import unsupported
from shared import labels
from shared.http1 import HttpError
from shared.lifecycle import woken
from shared.mcpserver import MCPServer
from shared.messages import ServerRecord, ServerState
from shared.metrics import LIST_DURATION, UPSTREAM_CONNECT_ERRORS, Metrics
from shared.naming import prefix_for
from shared.upstream import StatusError
from shared.valkey import Outbox

logger = logging.getLogger(__name__)


def failure_state(exc: BaseException) -> ServerState:
    """What a failed listing says of the server: it wants a login (401), cannot be reached, or answers wrongly."""
    if isinstance(exc, StatusError):
        if exc.status == 401:
            return "Auth Required"
        return "Disconnected" if exc.status >= 500 else "Failed"
    return "Disconnected" if isinstance(exc, HttpError | OSError | TimeoutError) else "Failed"


@dataclass
class Probe:
    server: MCPServer
    previous: ServerRecord | None = None  # published before this probe: served until its first attempt ends
    task: "asyncio.Task[None] | None" = None
    listener: Listener | None = None
    listening: "asyncio.Task[None] | None" = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # list again now: the server said its lists changed
    good: ServerRecord | None = None  # the last successful listing
    state: ServerState | None = None  # None until the first attempt ended
    failing_since: float | None = None
    error: str | None = None
    failures: int = 0  # consecutive; a login the server asks for is no failure
    attempts: int = 0
    connected_since: datetime | None = None  # when the current (or last) connected period began
    retry_at: datetime | None = None  # when a failing server is tried next

    def stop(self) -> None:
        for task in (self.task, self.listening):
            if task is not None:
                task.cancel()

    def failed(self, exc: BaseException, delay: float) -> None:
        state = failure_state(exc)
        if state != "Auth Required":
            self.failures += 1
        self.error = str(exc) or type(exc).__name__
        self.retry_at = datetime.now(UTC) + timedelta(seconds=delay) if state != "Auth Required" else None
        if self.failing_since is None or state != self.state:
            logger.warning("server %s cannot be listed (%s): %s", self.server.name, state, self.error)
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.state = state

    def listed(self, listing: ServerRecord) -> None:
        if self.failing_since is not None:
            logger.info("server %s is back", self.server.name)
        if self.state != "Connected":
            self.connected_since = datetime.now(UTC)
        self.good, self.failing_since, self.error, self.failures, self.retry_at = listing, None, None, 0, None
        self.state = "Connected"


def _adoptable(record: ServerRecord | None, server: MCPServer) -> ServerRecord | None:
    """The published record as the new probe's last good listing: only a listing of the same spec still stands."""
    if record is None or record.state != "Connected" or record.spec != server.spec:
        return None
    return record.model_copy(update={"exposed": True, "error": None})  # collisions are decided again


class Probes:
    def __init__(self, settings: DiscoverySettings, outbox: Outbox, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.outbox = outbox
        metrics = metrics if metrics is not None else Metrics("discovery")
        self._listed = metrics.histogram(LIST_DURATION)
        self._connect_errors = metrics.counter(UPSTREAM_CONNECT_ERRORS)
        self.probes: dict[str, Probe] = {}
        self.changed = asyncio.Event()  # a listing changed: the records may have to be published again

    def apply(self, desired: Mapping[str, MCPServer], published: Mapping[str, ServerRecord]) -> None:
        """Start, restart or stop probes so that they match the desired servers; a new probe starts from the
        server's published record."""
        for name in list(self.probes):
            if name not in desired:
                self.probes.pop(name).stop()
                logger.info("server %s removed", name)
        for name, server in desired.items():
            probe = self.probes.get(name)
            if probe is not None and probe.server.spec == server.spec:
                probe.server = server  # the same spec; keep the newest metadata
                continue
            if probe is not None:
                probe.stop()
                logger.info("server %s changed", name)
            else:
                logger.info("server %s added", name)
            self.probes[name] = self._start(server, published.get(name))
        self.changed.set()

    def _start(self, server: MCPServer, previous: ServerRecord | None) -> Probe:
        probe = Probe(server, previous=previous)
        reason = unsupported(server)
        if reason is not None:
            logger.error("MCPServer %s is not served: %s", server.name, reason)
            probe.state, probe.error = "Failed", reason
            return probe
        probe.good = _adoptable(previous, server)  # a listing that still stands: its grace period holds too
        probe.task = asyncio.create_task(self._probe(probe))
        return probe

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
                async with asyncio.timeout(s.list_timeout + 1):
                    listing = await list_server(probe.server, s.list_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - however listing fails, it is the server's state to report
                self._observe(probe.server.name, started, exc)
                if failure_state(exc) == "Auth Required":
                    delay = s.refresh_seconds  # a steady state: asking more often changes nothing
                else:
                    delay = min(s.retry_max_seconds, 0.5 * 2 ** min(probe.failures + 1, 10))
                probe.failed(exc, delay)
            else:
                self._observe(probe.server.name, started, None)
                probe.listed(listing)
                delay = s.refresh_seconds
                self._listen(probe)
            self.changed.set()
            probe.wake.clear()
            await woken(probe.wake, delay)

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
        """The records as they should be now: one per desired server, once it has one."""
        now = time.monotonic()
        result = {}
        for name in sorted(self.probes):
            record = self._record(self.probes[name], now)
            if record is not None:
                result[name] = record
        return resolve_collisions(result)

    def _record(self, probe: Probe, now: float) -> ServerRecord | None:
        s = self.settings
        name, spec = probe.server.name, probe.server.spec
        prefix = prefix_for(name, spec.tool_prefix, s.prefix_mode, len(self.probes))
        source: Literal["filesystem", "kubernetes"] = "kubernetes" if s.source == "kubernetes" else "filesystem"
        if probe.good is not None and (probe.failing_since is None or now - probe.failing_since < s.grace_seconds):
            return probe.good.model_copy(update={"prefix": prefix, "error": probe.error, "source": source})
        if probe.state is None and probe.previous is not None:
            # The old listing under the new spec: a new prefix or family shows at once, and a listing that finds
            # the same tools changes nothing more.
            served = {"exposed": True, "error": None} if probe.previous.state == "Connected" else {}
            return probe.previous.model_copy(update={"prefix": prefix, "spec": spec, "source": source, **served})
        if probe.state is None:
            return None
        return ServerRecord(
            name=name,
            url=spec.url or "",
            state=probe.state,
            error=probe.error,
            prefix=prefix,
            headers=spec.headers or {},
            timeout=float(spec.timeout),
            spec=spec,
            source=source,
        )

    def health(self, records: Mapping[str, ServerRecord]) -> dict[str, ServerStatus]:
        """Each server's health as its status should say, once it is known (its first attempt ended)."""
        result = {}
        for name, probe in self.probes.items():
            if probe.state is not None:
                result[name] = status_of(probe, records.get(name))
        return result


def status_of(probe: Probe, record: ServerRecord | None) -> ServerStatus:
    meta = probe.server.metadata
    connected = probe.state == "Connected" and probe.good is not None
    listing = probe.good if connected else None
    hidden = record is not None and not record.exposed
    assert probe.state is not None
    return ServerStatus(
        namespace=meta.namespace or "",
        name=meta.name,
        state=probe.state,
        last_error=probe.error or (record.error if hidden and record is not None else None),
        last_connected=probe.connected_since,
        consecutive_failures=probe.failures,
        next_retry_after=probe.retry_at,
        tool_count=len(listing.tools) if listing is not None else 0,
        observed_generation=meta.generation,
        protocol_version=listing.protocol_version if listing is not None else "",
        server_info=listing.server_info if listing is not None else {},
        exposed=not hidden,
    )
