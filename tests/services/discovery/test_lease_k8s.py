"""Leader election on a Lease of the test API server: one leader, renewal, a leader that stops in time, takeover."""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import pytest
from kubernetes.aio import client

from services.discovery.lease_k8s import KubernetesLease
from tests.kube import ROOT, FakeApi

LEASE = "/leases/muster-discovery"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 2.0, 1.2, 0.3  # fast, and in the order leader election needs


def candidate(kube: client.ApiClient, holder: str, *, slow: bool = False) -> KubernetesLease:
    """`slow` for tests whose point is not timing: their steps must not run out of a deadline on a busy machine."""
    scale = 10 if slow else 1
    return KubernetesLease(
        kube,
        "muster",
        "muster-discovery",
        holder,
        lease_duration=LEASE_DURATION * scale,
        renew_deadline=RENEW_DEADLINE * scale,
        retry_period=RETRY_PERIOD * scale,
    )


@pytest.mark.anyio
async def test_one_candidate_leads_and_a_renewal_is_one_request(api: FakeApi, kube: client.ApiClient) -> None:
    a, b = candidate(kube, "a", slow=True), candidate(kube, "b", slow=True)
    assert await a.renew() and a.is_leader
    assert not await b.renew() and not b.is_leader
    api.reset_counts()
    for _ in range(3):
        assert await a.renew()
    assert api.count("update", LEASE) == 3 and api.count("get", LEASE) == 0
    assert not await b.renew()


@pytest.mark.anyio
async def test_a_leader_whose_renewal_hangs_stops_leading_before_the_standby_takes_over(
    api: FakeApi, kube: client.ApiClient
) -> None:
    a, b = candidate(kube, "a"), candidate(kube, "b")
    last_renewal = time.monotonic()
    assert await a.renew()
    assert not await b.renew()
    api.faults(rules=[{"verb": "update", "match": LEASE, "delay": 5.0, "count": 1}])
    hanging = asyncio.create_task(a.renew())
    a_stopped = b_took = None
    with anyio.fail_after(10):
        while b_took is None:
            if a_stopped is None and not a.is_leader:
                a_stopped = time.monotonic()
            if await b.renew():
                b_took = time.monotonic()
            await asyncio.sleep(0.05)
    await hanging  # its request timed out; whether it still led then depended only on the clock
    assert a_stopped is not None, "the old leader still thought it led when the standby took over"
    assert a_stopped - last_renewal <= RENEW_DEADLINE + 0.1
    assert b_took - last_renewal >= LEASE_DURATION
    assert a_stopped < b_took
    assert not await a.renew(), "the old leader does not take the lease back"
    lease = api._call("GET", "/apis/coordination.k8s.io/v1/namespaces/muster/leases/muster-discovery")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1


@pytest.mark.anyio
async def test_a_released_lease_is_taken_by_the_standby_at_once(api: FakeApi, kube: client.ApiClient) -> None:
    a, b = candidate(kube, "a", slow=True), candidate(kube, "b", slow=True)
    assert await a.renew()
    assert not await b.renew()
    await a.release()
    assert not a.is_leader
    assert await b.renew()


@pytest.mark.anyio
async def test_a_failing_api_keeps_the_leader_until_its_deadline_and_no_longer(
    api: FakeApi, kube: client.ApiClient
) -> None:
    a = candidate(kube, "a")
    assert await a.renew()
    started = time.monotonic()
    api.faults(
        rules=[{"verb": "update", "match": LEASE, "status": 503}, {"verb": "get", "match": LEASE, "status": 503}]
    )
    assert await a.renew(), "one failed renewal within the deadline does not end the lead"
    with anyio.fail_after(5):
        while await a.renew():
            await asyncio.sleep(0.1)
    assert RENEW_DEADLINE - 0.3 <= time.monotonic() - started <= RENEW_DEADLINE + 0.5
    api.clear_faults()
    assert await a.renew(), "nobody took it meanwhile: the same holder leads again"


@pytest.mark.anyio
async def test_a_standby_knows_of_a_leader_while_the_lease_is_renewed_and_until_it_could_be_taken(
    api: FakeApi, kube: client.ApiClient
) -> None:
    a, b = candidate(kube, "a"), candidate(kube, "b")
    assert not b.leader_known, "nothing seen yet"
    assert await a.renew() and a.leader_known
    assert not await b.renew() and b.leader_known
    seen = time.monotonic()
    with anyio.fail_after(LEASE_DURATION + 2):  # nobody renews: known until the lease could be taken
        while b.leader_known:
            await asyncio.sleep(0.05)
    assert time.monotonic() - seen >= LEASE_DURATION - 0.2
    with anyio.fail_after(5):  # the standby takes it (a renewal slower than the deadline on a loaded machine retries)
        while not await b.renew():
            await asyncio.sleep(0.05)
    assert b.leader_known


@pytest.mark.anyio
async def test_a_candidate_that_loses_the_race_to_create_the_lease_knows_of_the_leader_at_once(
    api: FakeApi, kube: client.ApiClient
) -> None:
    a, b = candidate(kube, "a", slow=True), candidate(kube, "b", slow=True)
    api.faults(rules=[{"verb": "create", "match": "/leases", "delay": 1.5, "count": 1}])
    late = asyncio.create_task(b.renew())  # finds no lease; its create is held back 1.5 s (it waits 2 s at most)
    with anyio.fail_after(10):
        while api.count("create", "/leases") < 1:
            await asyncio.sleep(0.01)
    assert await a.renew(), "a finds no lease either, and creates it first"
    assert not await late, "b's create comes second: 409"
    assert b.leader_known and not b.is_leader, "b knows a leader holds it without another read"


class Holder:
    def __init__(self, api: FakeApi, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.kube.lease_holder", "--url", api.url, "--holder", name],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def became_leader_at(self) -> float | None:
        times = [float(line.split()[2]) for line in self.lines if line.startswith("leader ")]
        return times[-1] if times else None


@contextmanager
def holders(api: FakeApi, *names: str) -> Iterator[list[Holder]]:
    started = [Holder(api, name) for name in names]
    try:
        yield started
    finally:
        for holder in started:
            if holder.process.poll() is None:
                holder.process.kill()
            holder.process.wait(10)
            holder.reader.join(5)
            assert holder.process.stdout is not None
            holder.process.stdout.close()


def wait_for(predicate: Callable[[], object], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_processes_sigkill_the_leader_and_the_other_takes_over_within_15_seconds(api: FakeApi) -> None:
    with holders(api, "first", "second") as (first, second):
        wait_for(lambda: first.became_leader_at() or second.became_leader_at(), within=20)
        wait_for(lambda: all(h.lines for h in (first, second)), within=20)
        leader, standby = (first, second) if first.became_leader_at() else (second, first)
        time.sleep(3)  # a few renewals, so the standby has seen the lease renewed
        assert standby.became_leader_at() is None
        leader.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(standby.became_leader_at, within=20)
        took = standby.became_leader_at()
        assert took is not None
        print(f"the standby took over {took - killed:.1f} s after the SIGKILL")
        assert took - killed <= 15.0, f"took over {took - killed:.1f} s after the SIGKILL"
