"""Both leases behind the one interface; the Valkey lease against a real valkey-server."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from kubernetes.aio import client

from muster.stack import Stack, free_port
from services.discovery.leader import Lease
from services.discovery.leadership import Leadership
from services.discovery.lease_k8s import KubernetesLease
from shared.valkey import Outbox

pytestmark = pytest.mark.anyio


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[str]:
    stack = Stack(tmp_path)
    try:
        yield stack.valkey(free_port())
    finally:
        stack.stop()


async def test_the_valkey_lease_and_the_kubernetes_lease_are_one_interface(valkey: str) -> None:
    outbox = Outbox(valkey)
    async with client.ApiClient(client.Configuration(host="http://127.0.0.1:9")) as api:
        both: list[object] = [Lease(outbox, "a", 10), KubernetesLease(api, "muster", "l", "a")]
        assert all(isinstance(lease, Leadership) for lease in both)
    outbox.close()


async def test_the_valkey_lease_stops_leading_on_its_own_before_its_key_can_expire(valkey: str) -> None:
    outbox = Outbox(valkey)
    a, b = Lease(outbox, "a", 2.0), Lease(outbox, "b", 2.0)
    try:
        assert await a.renew() and a.is_leader
        assert not await b.renew() and not b.is_leader
        with anyio.fail_after(3):
            while a.is_leader:
                await asyncio.sleep(0.02)
        assert not await b.renew(), "the key is still there when the old leader stops"
        with anyio.fail_after(4):
            while not await b.renew():
                await asyncio.sleep(0.05)
        assert b.is_leader and not a.is_leader
        await b.release()
        assert not b.is_leader and await a.renew()
    finally:
        outbox.close()


async def test_the_valkey_lease_knows_of_a_leader_while_valkey_answers_and_forgets_after_a_ttl(valkey: str) -> None:
    outbox = Outbox(valkey)
    a, b = Lease(outbox, "a", 1.0), Lease(outbox, "b", 1.0)
    try:
        assert not b.leader_known
        assert await a.renew() and a.leader_known
        assert not await b.renew() and b.leader_known, "another one holds the key"
        with anyio.fail_after(2):  # no answer from Valkey since: after a ttl, no leader is known
            while b.leader_known:
                await asyncio.sleep(0.02)
    finally:
        outbox.close()
