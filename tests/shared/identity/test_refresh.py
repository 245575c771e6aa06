"""Single-flight refresh against a real provider: a storm of callers in two processes, one refresh at the provider."""

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from muster.stack import free_port
from shared.identity.errors import ReauthRequired
from shared.identity.store import Tokens
from tests.oidc import MUSTER_CLIENT, MUSTER_SECRET, OidcProvider
from tests.oidc.harness import provider_for, start_valkey
from tests.shared.identity.upstream import expired, parts, refresh_many, upstream_login

pytestmark = [pytest.mark.slow, pytest.mark.anyio]  # slow: runs oidc-provider
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OidcProvider, str]]:
    stack, valkey_url = start_valkey(tmp_path_factory.mktemp("valkey"))
    base = f"http://127.0.0.1:{free_port()}"
    provider = provider_for(base)
    try:
        yield base, provider, valkey_url
    finally:
        provider.stop()
        stack.stop()


async def store_expired_login(valkey_url: str, key: str, provider: OidcProvider, base: str, name: str) -> Tokens:
    valkey, sealed, upstream, _, http = await parts(valkey_url, key, provider.issuer)
    try:
        tokens = expired(upstream.tokens(upstream_login(provider.issuer, f"{base}/oauth/callback", "mia")))
        await sealed.put(name, tokens, 3600)
        await valkey.delete("go")
        return tokens
    finally:
        await http.aclose()
        await valkey.aclose()


async def test_twenty_concurrent_refreshes_from_two_processes_make_one_refresh_at_the_provider(
    world: tuple[str, OidcProvider, str],
) -> None:
    base, provider, valkey_url = world
    key = base64.b64encode(os.urandom(32)).decode()
    name = "muster:oauth:upstream:storm"
    old = await store_expired_login(valkey_url, key, provider, base, name)
    before = provider.stats()["refreshes"]
    child = second_process(valkey_url, key, provider.issuer, name)
    valkey = Redis.from_url(valkey_url)
    try:
        mine = asyncio.create_task(refresh_many(valkey_url, key, provider.issuer, name, 10))
        with anyio.fail_after(20):
            while len([k async for k in valkey.scan_iter("ready:*")]) < 2:
                await asyncio.sleep(0.01)
        await valkey.set("go", 1)
        here = await asyncio.wait_for(mine, 20)
        out, _ = await asyncio.to_thread(child.communicate, timeout=20)
    finally:
        await valkey.aclose()
        if child.poll() is None:
            child.kill()
    there = orjson.loads(out)
    assert len(here) == len(there) == 10
    assert len(set(here) | set(there)) == 1 and old.access_token not in here
    assert provider.stats()["refreshes"] - before == 1


def second_process(valkey_url: str, key: str, issuer: str, name: str) -> "subprocess.Popen[bytes]":
    return subprocess.Popen(
        [sys.executable, "-m", "tests.shared.identity.upstream", valkey_url, key, issuer, name, "10"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def revoke_at_provider(issuer: str, token: str | None) -> None:
    httpx.post(
        f"{issuer}/token/revocation",
        auth=(MUSTER_CLIENT, MUSTER_SECRET),
        data={"token": token, "token_type_hint": "refresh_token"},
    ).raise_for_status()


async def test_a_revoked_refresh_token_is_a_clear_sign_in_again(world: tuple[str, OidcProvider, str]) -> None:
    base, provider, valkey_url = world
    key = base64.b64encode(os.urandom(32)).decode()
    name = "muster:oauth:upstream:revoked"
    tokens = await store_expired_login(valkey_url, key, provider, base, name)
    await asyncio.to_thread(revoke_at_provider, provider.issuer, tokens.refresh_token)
    valkey, sealed, upstream, refresher, http = await parts(valkey_url, key, provider.issuer)
    try:
        with pytest.raises(ReauthRequired):
            await refresher.fresh(name, upstream.refresh, lambda _: 3600)
        assert await sealed.get(name, Tokens) is None  # the dead tokens are gone: the next caller is told at once
        with pytest.raises(ReauthRequired):
            await refresher.fresh(name, upstream.refresh, lambda _: 3600)
    finally:
        await http.aclose()
        await valkey.aclose()


async def test_tokens_that_are_not_expiring_are_returned_without_asking_the_provider(
    world: tuple[str, OidcProvider, str],
) -> None:
    base, provider, valkey_url = world
    key = base64.b64encode(os.urandom(32)).decode()
    valkey, sealed, upstream, refresher, http = await parts(valkey_url, key, provider.issuer)
    try:
        tokens = upstream.tokens(upstream_login(provider.issuer, f"{base}/oauth/callback", "noah"))
        await sealed.put("muster:oauth:upstream:fresh", tokens, 3600)
        before = provider.stats()["refreshes"]
        got = await refresher.fresh("muster:oauth:upstream:fresh", upstream.refresh, lambda _: 3600)
        assert got == tokens and provider.stats()["refreshes"] == before
    finally:
        await http.aclose()
        await valkey.aclose()
