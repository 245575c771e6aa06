"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

Every `retry_period` each candidate tries to take or keep the lease. The holder renews with a PUT that carries
the lease's resourceVersion, so two candidates can never both win the same round (the loser gets 409). A
candidate takes over a lease held by another only after it has seen the lease record unchanged for
`lease_duration`, measured on its own clock from when it first saw that record (so clock skew between machines
does not matter). The holder counts itself leader only until `renew_deadline` after the start of its last
successful renewal; `renew_deadline < lease_duration` makes it stop before anyone else could have taken over.
"""

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
from kubernetes.aio import client

logger = logging.getLogger(__name__)

Record = tuple[str | None, datetime | None, int | None, str | None]


class KubernetesLease:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        holder: str,
        *,
        lease_duration: float = 10.0,
        renew_deadline: float = 7.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        self.leases = client.CoordinationV1Api(api)
        self.namespace, self.name, self.holder = namespace, name, holder
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock = clock
        self._valid_until = -math.inf
        self._known_until = -math.inf  # until when another holder's lease, as we saw it, may still stand
        self._lease: client.V1Lease | None = None  # the lease as we last wrote it, while we hold it
        self._observed: Record | None = None
        self._observed_at = 0.0

    @property
    def is_leader(self) -> bool:
        return self.clock() < self._valid_until

    @property
    def leader_known(self) -> bool:
        return self.is_leader or self.clock() < self._known_until

    async def renew(self) -> bool:
        was_leader = self.is_leader
        started = self.clock()
        try:
            async with asyncio.timeout(self.renew_deadline):
                won = await self._attempt()
        except (client.ApiException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.warning("lease %s/%s: renewal failed: %s", self.namespace, self.name, _brief(exc))
            won = False
        if won:
            self._valid_until = started + self.renew_deadline
        elif not self.is_leader:
            self._lease = None
        if was_leader != self.is_leader:
            logger.info(
                "lease %s/%s: %s %s the lead", self.namespace, self.name, self.holder, "took" if won else "lost"
            )
        return self.is_leader

    async def run(self) -> None:
        """Renews every retry period, forever; `is_leader` tells the outcome at any time."""
        while True:
            await self.renew()
            await asyncio.sleep(self.retry_period)

    async def release(self) -> None:
        if not self.is_leader or self._lease is None:
            return
        self._valid_until = -math.inf
        lease, self._lease = self._lease, None
        lease.spec = lease.spec or client.V1LeaseSpec()
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        try:
            await self.leases.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=2)
        except (client.ApiException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.warning("lease %s/%s: release failed: %s", self.namespace, self.name, _brief(exc))

    async def _attempt(self) -> bool:
        if self._lease is not None:  # we hold it: one PUT renews it, unless someone else wrote in between
            try:
                return await self._write(self._lease, taking=False)
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
        try:
            lease = await self.leases.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.retry_period
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            return await self._create()
        spec = lease.spec or client.V1LeaseSpec()
        record: Record = (
            spec.holder_identity,
            spec.renew_time,
            spec.lease_transitions,
            lease.metadata.resource_version if lease.metadata else None,
        )
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        holder = spec.holder_identity
        if holder and holder != self.holder and self.clock() < self._observed_at + self.lease_duration:
            self._known_until = self._observed_at + self.lease_duration
            return False  # held by another, and renewed recently enough as far as we have seen
        try:
            return await self._write(lease, taking=holder != self.holder)
        except client.ApiException as exc:
            if exc.status == 409:
                return False  # another candidate won this round
            raise

    async def _write(self, lease: client.V1Lease, *, taking: bool) -> bool:
        now = datetime.now(UTC)
        spec = lease.spec or client.V1LeaseSpec()
        spec.holder_identity = self.holder
        spec.lease_duration_seconds = math.ceil(self.lease_duration)
        spec.renew_time = now
        if taking:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        lease.spec = spec
        self._lease = await self.leases.replace_namespaced_lease(
            self.name, self.namespace, lease, _request_timeout=self.retry_period
        )
        return True

    async def _create(self) -> bool:
        now = datetime.now(UTC)
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.holder,
                lease_duration_seconds=math.ceil(self.lease_duration),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self._lease = await self.leases.create_namespaced_lease(self.namespace, lease, _request_timeout=2)
        except client.ApiException as exc:
            if exc.status == 409:
                # Created by another candidate a moment ago: a leader is known now, not only at our next read.
                self._known_until = self.clock() + self.lease_duration
                return False
            raise
        return True


def _brief(exc: Exception) -> str:
    if isinstance(exc, client.ApiException):
        return f"{exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__
