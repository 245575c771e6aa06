"""Discovery: keeps the server records in Valkey equal to what the configured servers offer.

One code path for both sources (`MUSTER_DISCOVERY_SOURCE`): a source (source.py: the folder, or MCPServer resources
through watch.py) yields the desired servers, complete from its first update on. Every discovery process follows
its source; only the one holding the lease (a Valkey key for the folder, a coordination.k8s.io Lease for
Kubernetes) probes the servers (probes.py), publishes their records (publisher.py) and, with Kubernetes, writes each
MCPServer's status (status_writer.py). Nothing is published before the source's first complete update, and a new
leader starts from what the last one published, so no server leaves the catalog because a process started.
Leadership is checked right before each write: a leader whose lease lapsed stops writing at once.

It also follows the control stream, for changed subscriptions that the servers' listeners subscribe to upstream.

`create_app(settings)` returns the service; its lifespan builds the Valkey connections and the Kubernetes client,
runs discovery with its health server (Observed: /healthz, /readyz with "valkey", "synced" and "leader", /metrics),
and at the end lets go of the lease and closes the connections.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.discovery.config import DiscoverySettings
from services.discovery.folder import Folder
from services.discovery.kube import api_client
from services.discovery.leader import Lease
from services.discovery.leadership import Leadership
from services.discovery.lease_k8s import KubernetesLease
from services.discovery.probes import Probes
from services.discovery.publisher import Publisher
from services.discovery.source import Desired, FolderSource, Source
from services.discovery.status import ServerStatus
from services.discovery.status_writer import StatusWriter
from services.discovery.watch import MCPServerWatch, resource
from shared import streams
from shared.follow import Follow
from shared.health import Health, serve
from shared.lifecycle import Service, instance_id, woken
from shared.messages import ServerRecord, SubscriptionsChanged, decode_control
from shared.metrics import CATALOG_ENTRIES, LEADER, SERVER_STATE, Metrics, Samples
from shared.queue_metrics import QueueCollector
from shared.valkey import Outbox, connect

logger = logging.getLogger(__name__)

RESUBSCRIBE_SECONDS = 30.0
OUTAGE_PAUSE = 1.0

Key = tuple[str, str]  # namespace, name


class NotReady(Exception):
    pass


class Discovery:
    def __init__(
        self,
        settings: DiscoverySettings,
        client: Redis,
        outbox: Outbox,
        source: Source,
        leadership: Leadership,
        statuses: StatusWriter | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.leadership = leadership
        self.statuses = statuses  # None: the source has nowhere to write a status (the folder)
        self.outbox = outbox
        self.probes = Probes(settings, outbox, metrics)
        self.publisher = Publisher(client, outbox)
        self.control = Follow(client, [streams.CONTROL])
        self.desired: Desired | None = None  # the source's latest update; None until its first
        self.leading = False  # acting as leader: probing, publishing, writing status
        self._applied: Desired | None = None  # what the probes were last given
        self._reported: dict[Key, ServerStatus] = {}  # submitted to the status writer
        self._checked_at = 0.0
        self._wake = self.probes.changed  # one event wakes the loop: a listing, an update, a lease renewal

    @property
    def synced(self) -> bool:
        """The source delivered its first complete list of servers."""
        return self.desired is not None

    def readiness(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """Discovery's own readiness checks, for shared.health.Health.check: "synced" and "leader"."""

        async def synced() -> None:
            if not self.synced:
                raise NotReady(f"the {self.settings.source} source has not delivered a complete list yet")

        async def leader() -> None:
            if not self.leadership.leader_known:
                raise NotReady("no discovery is known to hold the lease")

        return [("synced", synced), ("leader", leader)]

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._follow_source())
                tasks.create_task(self._renew_forever())
                tasks.create_task(self._follow_control())
                if self.statuses is not None:
                    tasks.create_task(self.statuses.run())
                tasks.create_task(self._serve())
        finally:
            self.probes.stop_all()
            with contextlib.suppress(RedisError, ConnectionError, OSError):
                await self.leadership.release()

    async def _follow_source(self) -> None:
        async for update in self.source.updates():
            self.desired = update.desired
            self._wake.set()

    async def _renew_forever(self) -> None:
        while True:
            try:
                await self.leadership.renew()
                if isinstance(self.leadership, KubernetesLease) and self.leadership.is_leader:
                    await self._mirror(self.leadership)
            except (RedisError, ConnectionError, OSError) as exc:
                logger.warning("the lease cannot be renewed: %s", exc)
            self._wake.set()
            await asyncio.sleep(self.leadership.retry_period)

    async def _mirror(self, lease: KubernetesLease) -> None:
        """Names the Lease's holder in the key the Valkey lease uses, for as long as the Lease could be held: what
        `muster status` and the standbys' readers show as the leader in Kubernetes mode too (informational: the
        Lease alone decides who leads)."""
        ttl_ms = int(lease.lease_duration * 1000)
        await self.outbox.send("SET", streams.DISCOVERY_LEADER, lease.holder, "PX", ttl_ms)

    async def _serve(self) -> None:
        while True:
            was_woken = self._wake.is_set()
            self._wake.clear()
            try:
                await self._step(was_woken)
            except (RedisError, ConnectionError, OSError) as exc:
                logger.warning("valkey unreachable: %s; trying again", exc)
                self._wake.set()  # whatever was to be published still is
                await asyncio.sleep(OUTAGE_PAUSE)
                continue
            # Woken by a change, or at least every poll interval: a lease that lapses on the clock is noticed.
            await woken(self._wake, self.settings.poll_seconds)

    async def _step(self, woken: bool) -> None:
        """Follows the lease; as leader, gives the probes the desired servers and publishes what they found."""
        if await self._follow_lease():
            woken = True
        if not self.leading or self.desired is None or not woken:
            return
        if self.desired is not self._applied:
            self._applied = self.desired
            self.probes.apply(self.desired.servers, self.publisher.published)
        records = self.probes.records()
        if self.leadership.is_leader:  # checked right before writing: a lapsed lease stops the writes at once
            await self.publisher.publish(records)
            self._report(records)

    async def _follow_lease(self) -> bool:
        """Takes up or lays down the work as the lease says; True when everything is to be published again."""
        leader = self.leadership.is_leader
        if leader and not self.leading:
            self.publisher.forget()
            await self.publisher.check()  # what the last leader published: the probes start from it
            self.leading, self._applied, self._checked_at = True, None, time.monotonic()
            logger.info("discovery leads: probing %s servers", len(self.desired.servers) if self.desired else "no")
            return True
        if not leader and self.leading:
            logger.info("discovery no longer leads; another one probes and publishes")
            self.probes.stop_all()
            self.publisher.forget()
            self.leading, self._applied, self._reported = False, None, {}
        elif leader and time.monotonic() - self._checked_at > self.leadership.retry_period:
            intact = await self.publisher.check()
            self._checked_at = time.monotonic()  # only once it answered: a check that failed is due again at once
            if not intact:
                # Valkey lost its data (restarted without persistence): publish everything again, consumer groups
                # first, and let the listeners subscribe again.
                logger.warning("the catalog in valkey is gone; publishing it again")
                self.probes.subscriptions_changed()
                return True
        return False

    def _report(self, records: dict[str, ServerRecord]) -> None:
        """Hands every status that changed to the writer, and forgets the servers that are gone."""
        if self.statuses is None or self.desired is None:
            return
        wanted = {(s.namespace, s.name): s for s in self.probes.health(records).values()}
        for where, problem in self.desired.errors.items():
            namespace, name = resource(where)
            wanted[(namespace, name)] = ServerStatus(namespace=namespace, name=name, state="Failed", last_error=problem)
        for key in [k for k in self._reported if k not in wanted]:
            del self._reported[key]
            self.statuses.forget(*key)
        for key, status in wanted.items():
            if self._reported.get(key) != status:
                self._reported[key] = status
                self.statuses.submit(status)

    async def _follow_control(self) -> None:
        """Subscription changes from the ingress, and a full resubscription now and then to heal a missed one."""
        resubscribe_at = time.monotonic() + RESUBSCRIBE_SECONDS
        async for batch in self.control:
            for _, entries in batch:
                for entry_id, fields in entries:
                    try:
                        control = decode_control(fields)
                    except ValueError as exc:
                        logger.warning("control entry %s dropped: %s", entry_id, exc)
                        continue
                    if isinstance(control, SubscriptionsChanged):
                        self.probes.subscriptions_changed(control.server)
            if time.monotonic() >= resubscribe_at:
                resubscribe_at = time.monotonic() + RESUBSCRIBE_SECONDS
                self.probes.subscriptions_changed()


async def parts(
    settings: DiscoverySettings, outbox: Outbox, resources: contextlib.AsyncExitStack
) -> tuple[Source, Leadership, StatusWriter | None]:
    """The source, the lease and the status writer the settings ask for."""
    holder = instance_id()
    if settings.source == "folder":
        source = FolderSource(Folder(settings.servers), settings.poll_seconds)
        return source, Lease(outbox, holder, settings.leader_ttl_seconds), None
    api = await api_client(settings.kubeconfig, settings.kube_context)
    resources.push_async_callback(api.close)
    lease = KubernetesLease(
        api,
        settings.lease_namespace,
        settings.lease_name,
        holder,
        lease_duration=settings.lease_duration_seconds,
        renew_deadline=settings.lease_renew_deadline_seconds,
        retry_period=settings.lease_retry_period_seconds,
    )
    watch = MCPServerWatch(
        api,
        settings.namespace,
        watch_timeout_seconds=settings.watch_timeout_seconds,
        backoff_max_seconds=settings.watch_backoff_max_seconds,
    )
    statuses = StatusWriter(api, lambda: lease.is_leader, min_interval=settings.status_min_interval_seconds)
    return watch, lease, statuses


class Observed:
    """What discovery exports: the servers' states and the catalog's size (the leader's), whether it leads, the
    queue of every server (read from Valkey at each scrape), and its readiness: Valkey answers, the source delivered
    its first complete list, and a leader is known."""

    def __init__(self, discovery: Discovery, client: Redis, metrics: Metrics) -> None:
        self.discovery = discovery
        self.client = client
        self.metrics = metrics
        self.names: list[str] = []
        self.queues = QueueCollector(client, lambda: self.names).register(metrics.registry)
        self.health = Health(metrics.registry)
        self.health.check("valkey", client.ping)
        for name, check in discovery.readiness():  # "synced" and "leader"
            self.health.check(name, check)
        self.health.before_scrape(self.refresh)
        metrics.sample(SERVER_STATE, self.states)
        metrics.sample(CATALOG_ENTRIES, self.entries)
        metrics.sample(LEADER, lambda: {(): 1.0 if discovery.leading else 0.0})

    async def refresh(self) -> None:
        """The servers of the catalog in Valkey (every replica reads them, standbys too), then their queues."""
        names = await self.client.hkeys(streams.SERVERS)
        self.names = [n.decode() if isinstance(n, bytes) else n for n in names]
        await self.queues.refresh()

    def states(self) -> Samples:
        return {(r.name, r.state): 1.0 for r in self.discovery.publisher.published.values()}

    def entries(self) -> Samples:
        published = [r for r in self.discovery.publisher.published.values() if r.exposed and r.state == "Connected"]
        return {
            ("tools",): sum(len(r.tools) for r in published),
            ("resources",): sum(len(r.resources) for r in published),
            ("resource_templates",): sum(len(r.resource_templates) for r in published),
            ("prompts",): sum(len(r.prompts) for r in published),
        }


@contextlib.asynccontextmanager
async def lifespan(settings: DiscoverySettings) -> AsyncIterator["asyncio.Task[None]"]:
    client = connect(settings.valkey_url, name="muster-discovery")
    outbox = Outbox(settings.valkey_url, name="muster-discovery-out")
    metrics = Metrics("discovery")
    try:
        async with contextlib.AsyncExitStack() as resources:
            discovery = Discovery(settings, client, outbox, *await parts(settings, outbox, resources), metrics=metrics)
            observed = Observed(discovery, client, metrics)
            work = asyncio.create_task(discovery.run())
            try:
                async with serve(observed.health, settings.metrics_host, settings.metrics_port):
                    yield work
            finally:
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
    finally:
        outbox.close()
        await client.aclose()


def create_app(settings: DiscoverySettings) -> Service:
    return Service(lambda: lifespan(settings))
