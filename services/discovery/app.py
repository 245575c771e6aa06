"""Discovery: keeps the server records in Valkey equal to what the configured servers offer.

While it holds the lease (leader.py), it turns the folder's MCPServer files into probes (probes.py), and the
probes' listings into records that the publisher writes and announces (publisher.py). It also follows the
control stream, for changed subscriptions that the servers' listeners subscribe to upstream.

`create_app(settings)` returns the service; its lifespan builds the Valkey connections, runs discovery, and
at the end lets go of the lease and closes the connections.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.discovery.config import DiscoverySettings
from services.discovery.folder import Folder
from services.discovery.leader import Lease
from services.discovery.probes import Probes
from services.discovery.publisher import Publisher
from shared import streams
from shared.follow import Follow
from shared.health import Health, serve
from shared.lifecycle import Service, instance_id
from shared.messages import SubscriptionsChanged, decode_control
from shared.metrics import CATALOG_ENTRIES, LEADER, SERVER_STATE, Metrics, Samples
from shared.queue_metrics import QueueCollector
from shared.valkey import Outbox, connect

logger = logging.getLogger(__name__)

RESUBSCRIBE_SECONDS = 30.0
OUTAGE_PAUSE = 1.0


class NotReady(Exception):
    pass


class Discovery:
    def __init__(self, settings: DiscoverySettings, client: Redis, outbox: Outbox, metrics: Metrics) -> None:
        self.settings = settings
        self.lease = Lease(outbox, instance_id(), settings.leader_ttl_seconds)
        self.probes = Probes(settings, outbox, metrics)
        self.publisher = Publisher(client, outbox)
        self.folder = Folder(settings.servers)
        self.control = Follow(client, [streams.CONTROL])

    async def run(self) -> None:
        control = asyncio.create_task(self._follow_control())
        renew_every = self.settings.leader_ttl_seconds / 3
        renew_at = 0.0
        try:
            while True:
                try:
                    if time.monotonic() >= renew_at:
                        renew_at = time.monotonic() + renew_every
                        if not await self._lead():
                            await asyncio.sleep(renew_every)
                            continue
                    await self._step()
                except (RedisError, ConnectionError, OSError) as exc:
                    logger.warning("valkey unreachable: %s; trying again", exc)
                    self.probes.changed.set()  # whatever was to be published still is
                    renew_at = 0.0
                    await asyncio.sleep(OUTAGE_PAUSE)
        finally:
            control.cancel()
            self.probes.stop_all()
            with contextlib.suppress(RedisError, ConnectionError, OSError):
                await self.lease.release()

    async def _step(self) -> None:
        """Reads the folder if it changed, publishes what changed, and waits a moment for more."""
        if self.folder.changed():
            self.probes.apply(self.folder.read(), self.publisher.published)
        if self.probes.changed.is_set():
            self.probes.changed.clear()
            await self.publisher.publish(self.probes.records())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.probes.changed.wait(), self.settings.poll_seconds)

    async def _lead(self) -> bool:
        """Renews the lease; as leader, notices records that Valkey lost. False while another one leads."""
        if not await self.lease.renew():
            if self.probes.probes:  # lost the lead: the next leader owns the servers now
                self.probes.stop_all()
                self.folder = Folder(self.settings.servers)
                self.publisher.forget()
            return False
        if not await self.publisher.check():
            # Valkey lost its data (restarted without persistence): publish everything again, consumer groups
            # first, and let the listeners subscribe again.
            logger.warning("the catalog in valkey is gone; publishing it again")
            self.probes.subscriptions_changed()
            self.probes.changed.set()
        return True

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


class Observed:
    """What discovery exports: the servers' states and the catalog's size (the leader's), whether it leads, the
    queue of every server (read from Valkey at each scrape), and its readiness: Valkey answers and a leader is
    known."""

    def __init__(self, discovery: Discovery, client: Redis, metrics: Metrics) -> None:
        self.discovery = discovery
        self.client = client
        self.metrics = metrics
        self.names: list[str] = []
        self.queues = QueueCollector(client, lambda: self.names).register(metrics.registry)
        self.health = Health(metrics.registry)
        self.health.check("valkey", client.ping)
        self.health.check("leader", self.leader_known)
        self.health.before_scrape(self.refresh)
        metrics.sample(SERVER_STATE, self.states)
        metrics.sample(CATALOG_ENTRIES, self.entries)
        metrics.sample(LEADER, lambda: {(): 1.0 if discovery.lease.is_leader else 0.0})

    async def refresh(self) -> None:
        """The servers of the catalog in Valkey (every replica reads them, standbys too), then their queues."""
        names = await self.client.hkeys(streams.SERVERS)
        self.names = [n.decode() if isinstance(n, bytes) else n for n in names]
        await self.queues.refresh()

    async def leader_known(self) -> None:
        if not self.discovery.lease.is_leader and not await self.client.exists(streams.DISCOVERY_LEADER):
            raise NotReady("no discovery holds the lead")

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
    discovery = Discovery(settings, client, outbox, metrics)
    observed = Observed(discovery, client, metrics)
    work = asyncio.create_task(discovery.run())
    try:
        async with serve(observed.health, settings.metrics_host, settings.metrics_port):
            yield work
    finally:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        outbox.close()
        await client.aclose()


def create_app(settings: DiscoverySettings) -> Service:
    return Service(lambda: lifespan(settings))
