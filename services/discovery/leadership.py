"""The one interface discovery's main loop uses to know whether it leads, whichever lease stands behind it:
the Valkey lease of the folder mode (services/discovery/leader.py) or the Kubernetes Lease (lease_k8s.py)."""

from typing import Protocol, runtime_checkable


@runtime_checkable
class Leadership(Protocol):
    @property
    def retry_period(self) -> float:
        """How often `renew` is to be called, in seconds."""
        ...

    @property
    def is_leader(self) -> bool:
        """True only while this process may act as the leader; it turns False on its own, before the lease could
        be taken by another process, when renewals stop succeeding."""
        ...

    @property
    def leader_known(self) -> bool:
        """True while this process leads or has recently seen another process hold the lease: what discovery's
        readiness reports (a standby that cannot reach the lease knows of no leader)."""
        ...

    async def renew(self) -> bool:
        """One attempt to take or keep the lease; returns `is_leader` after it."""
        ...

    async def release(self) -> None:
        """Gives the lease up if held, so that a standby takes over at once rather than after the lease expires."""
        ...
