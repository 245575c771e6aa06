"""The user's Dex tokens expire for real (they live 16 s here) and are refreshed without the agent noticing, once
however many workers need them at the same moment; a 401 from the server gets one refresh and one retry; a revoked
refresh token is a clear "sign in again"; a broken connection is never taken for an auth failure."""

import asyncio
import time

import httpx
import pytest
from redis.asyncio import Redis

from shared import errors, streams
from tests.identity.conftest import PODS, Agent, World, text
from tests.oidc import MUSTER_CLIENT, MUSTER_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def test_an_expired_token_is_refreshed_without_the_agent_noticing(world: World) -> None:
    user = world.sign_in("rosa")
    async with Agent(world.url(0), user.access_token) as agent:
        assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
        seen = await world.upstream_tokens(user)
        await world.wait_expiring(user)
        refreshes = world.refreshes()
        assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
    assert world.refreshes() == refreshes + 1
    assert (await world.upstream_tokens(user)).id_token != seen.id_token


async def test_twenty_concurrent_calls_from_two_workers_on_one_expired_token_refresh_once(world: World) -> None:
    user = world.sign_in("rita")
    async with Agent(world.url(0), user.access_token) as agent:
        assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
        await world.wait_expiring(user)
        refreshes = world.refreshes()
        started = time.monotonic()
        replies = await asyncio.gather(*(agent.call("x_sso_list", PODS) for _ in range(20)))
        elapsed_ms = (time.monotonic() - started) * 1000
    assert all("giantswarm" in text(r) for r in replies)
    assert world.refreshes() == refreshes + 1
    # both workers took calls of the burst (each read entries from the server's stream since it started)
    valkey = Redis.from_url(world.muster.valkey_url)
    try:
        consumers = await valkey.xinfo_consumers(streams.queue("sso").stream, streams.GROUP_WORKERS)
    finally:
        await valkey.aclose()
    active = [c for c in consumers if c["inactive"] is not None and c["inactive"] < elapsed_ms + 500]
    assert len(active) == 2, consumers


async def test_a_401_gets_one_refresh_and_one_retry_the_agent_does_not_see(world: World) -> None:
    sso = world.muster.standins["sso"]
    user = world.sign_in("tess")
    async with Agent(world.url(1), user.access_token) as agent:
        assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
        refreshes = world.refreshes()
        sso.fault(action="http_status", method="tools/call", status=401, count=1)
        try:
            assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
        finally:
            sso.clear_faults()
        assert world.refreshes() == refreshes + 1
        sso.fault(action="http_status", method="tools/call", status=401, count=2)
        try:
            refused = await agent.call("x_sso_list", PODS)
        finally:
            sso.clear_faults()
    # at most one more refresh (none when this worker still held the token the first refresh replaced, as the
    # stored one is then the newer), and the second 401 is the caller's: no retry loop
    assert world.refreshes() - refreshes in (1, 2)
    assert refused["error"]["code"] == errors.AUTH_REQUIRED
    assert "sign in to muster again" in refused["error"]["message"]


async def test_a_revoked_refresh_token_is_a_clear_sign_in_again(world: World) -> None:
    user = world.sign_in("sam")
    async with Agent(world.url(0), user.access_token) as agent:
        assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
        tokens = await world.upstream_tokens(user)
        async with httpx.AsyncClient() as http:
            revoked = await http.post(
                f"{world.dex.issuer}/token/revocation",
                data={"token": tokens.refresh_token, "token_type_hint": "refresh_token"},
                auth=(MUSTER_CLIENT, MUSTER_SECRET),
            )
        assert revoked.status_code == 200
        await world.wait_expiring(user)
        failures = world.dex.stats()["refreshErrors"]
        refused = await agent.call("x_sso_list", PODS)
        again = await agent.call("x_sso_list", PODS)
    assert world.dex.stats()["refreshErrors"] == failures + 1
    assert refused["error"]["code"] == errors.AUTH_REQUIRED, refused
    assert "sign in" in refused["error"]["message"] and refused["error"]["data"] == {"server": "sso"}
    assert again["error"]["code"] == errors.AUTH_REQUIRED  # the dead login is not tried at the provider again


async def test_a_broken_connection_is_not_an_auth_failure(world: World) -> None:
    sso = world.muster.standins["sso"]
    async with Agent(world.url(0), world.user("frank").access_token) as agent:
        assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
        refreshes = world.refreshes()
        sso.fault(action="drop_connection", method="tools/call", count=2)
        try:
            broken = await agent.call("x_sso_list", PODS)
        finally:
            sso.clear_faults()
        assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
    assert broken["error"]["code"] == errors.UPSTREAM_UNAVAILABLE, broken
    assert world.refreshes() == refreshes
