"""The downstream credentials against real parts: oidc-provider as the local Dex and as a remote cluster's Dex,
and the mcp-kubernetes stand-in validating bearer tokens as mcp-kubernetes does."""

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from muster.stack import Stack, free_port
from shared.identity import keys
from shared.identity.credentials import ForwardToken, TokenExchange, UserTokens
from shared.identity.errors import ProviderRejected, ReauthRequired
from shared.identity.principal import Principal
from shared.identity.store import Tokens
from tests.conftest import HEADERS, ROOT, result
from tests.oidc import EXCHANGE, K8S_CLIENT, K8S_SECRET, OidcProvider, client
from tests.oidc.harness import provider_for, start_valkey
from tests.shared.identity.upstream import expired, parts, upstream_login

pytestmark = [pytest.mark.slow, pytest.mark.anyio]  # slow: runs oidc-provider


@dataclass
class World:
    base: str
    local: OidcProvider
    remote: OidcProvider
    valkey_url: str
    forward_standin: str
    exchange_standin: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("valkey")
    stack, valkey_url = start_valkey(folder)
    base = f"http://127.0.0.1:{free_port()}"
    local = provider_for(base)
    remote = OidcProvider(
        [client(K8S_CLIENT, ["http://127.0.0.1:1/cb"], K8S_SECRET, grant_types=(EXCHANGE,))],
        env={"OIDC_EXCHANGE_TRUST": local.issuer, "OIDC_CONNECTOR": "management-dex"},
    ).start()
    standins = Stack(folder, log=lambda _: None)
    try:
        ports = free_port(), free_port()
        env = {"PYTHONPATH": str(ROOT)}
        for port, issuer, audience in ((ports[0], local.issuer, "muster"), (ports[1], remote.issuer, "mcp-kubernetes")):
            standins.python(
                f"standin {port}",
                "demo.kubernetes",
                "--port",
                str(port),
                "--oidc-issuer",
                issuer,
                "--oidc-audience",
                audience,
                env=env,
            )
            standins.wait_tcp(port, "standin")
        yield World(base, local, remote, valkey_url, *(f"http://127.0.0.1:{p}" for p in ports))
    finally:
        standins.stop()
        remote.stop()
        local.stop()
        stack.stop()


def call(standin: str, authorization: str | None) -> httpx.Response:
    """initialize, then tools/call list, as one client of the stand-in would."""
    headers = dict(HEADERS)
    if authorization:
        headers["Authorization"] = authorization
    init = httpx.post(
        f"{standin}/mcp",
        headers=headers,
        json={
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
    )
    if init.status_code != 200:
        return init
    headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
    return httpx.post(
        f"{standin}/mcp",
        headers=headers,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "list", "arguments": {"resourceType": "namespaces"}},
        },
    )


def stats(standin: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{standin}/_standin/stats").json()
    return result


@pytest.fixture
async def user(world: World) -> AsyncIterator[tuple[UserTokens, Principal, Any]]:
    key = base64.b64encode(os.urandom(32)).decode()
    valkey, sealed, upstream, refresher, http = await parts(world.valkey_url, key, world.local.issuer)
    family = f"family-{os.urandom(4).hex()}"
    body = await asyncio.to_thread(upstream_login, world.local.issuer, f"{world.base}/oauth/callback", "olga")
    await sealed.put(keys.upstream(family), upstream.tokens(body), 3600)
    principal = Principal(
        subject="olga", client_id="c", scopes=frozenset(), expires_at=time.time() + 600, source="muster", family=family
    )
    try:
        yield UserTokens(upstream, refresher), principal, (sealed, http)
    finally:
        await http.aclose()
        await valkey.aclose()


def test_the_standin_refuses_calls_without_a_valid_token_as_mcp_kubernetes_does(world: World) -> None:
    missing = call(world.forward_standin, None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{world.forward_standin}/.well-known/oauth-protected-resource", '
        'error="invalid_token", error_description="Missing Authorization header"'
    )
    assert call(world.forward_standin, "Basic abc").json()["error_description"] == "Invalid Authorization header format"
    assert call(world.forward_standin, "Bearer x.y.z").json()["error_description"] == "Token validation failed"


async def test_forward_token_sends_the_users_id_token_and_the_standin_sees_the_user(
    world: World, user: tuple[UserTokens, Principal, Any]
) -> None:
    tokens, principal, _ = user
    header = await ForwardToken(tokens).authorization(principal)
    response = await asyncio.to_thread(call, world.forward_standin, header)
    assert response.status_code == 200 and result(response)["result"]["isError"] is False
    assert stats(world.forward_standin)["callers"]["olga@example.com"] >= 1
    # an ID token for muster is not one for the remote cluster's audience
    assert (await asyncio.to_thread(call, world.exchange_standin, header)).status_code == 401


async def test_an_expiring_id_token_is_refreshed_once_and_then_served_from_memory(
    world: World, user: tuple[UserTokens, Principal, Any]
) -> None:
    tokens, principal, (sealed, _) = user
    assert principal.family is not None
    name = keys.upstream(principal.family)
    stored = await sealed.get(name, Tokens)
    await sealed.put(name, expired(stored), 3600)
    before = world.local.stats()["refreshes"]
    forward = ForwardToken(tokens)
    headers = await asyncio.gather(*(forward.authorization(principal) for _ in range(20)))
    assert len(set(headers)) == 1
    assert world.local.stats()["refreshes"] == before + 1
    now = await sealed.get(name, Tokens)
    assert now.refresh_token != stored.refresh_token and not now.expiring(60)
    assert await forward.authorization(principal) == headers[0]
    assert world.local.stats()["refreshes"] == before + 1
    assert (await asyncio.to_thread(call, world.forward_standin, headers[0])).status_code == 200


async def test_token_exchange_gets_an_id_token_of_the_remote_dex_for_its_audience(
    world: World, user: tuple[UserTokens, Principal, Any]
) -> None:
    tokens, principal, (_, http) = user
    exchange = TokenExchange(
        http,
        tokens,
        endpoint=f"{world.remote.issuer}/token",
        connector_id="management-dex",
        expected_issuer=world.remote.issuer,
        client_id=K8S_CLIENT,
        client_secret=K8S_SECRET,
        audience="mcp-kubernetes",
        margin=60,  # the stand-in Dex's ID tokens live 300 s
    )
    before = world.remote.stats()["exchanges"]
    first, second = await exchange.authorization(principal), await exchange.authorization(principal)
    assert first == second and world.remote.stats()["exchanges"] == before + 1  # cached until near expiry
    response = await asyncio.to_thread(call, world.exchange_standin, first)
    assert response.status_code == 200
    assert stats(world.exchange_standin)["callers"]["olga@example.com"] >= 1


async def test_token_exchange_checks_the_issuer_and_the_connector(
    world: World, user: tuple[UserTokens, Principal, Any]
) -> None:
    tokens, _, (_, http) = user
    common: dict[str, Any] = {
        "endpoint": f"{world.remote.issuer}/token",
        "client_id": K8S_CLIENT,
        "client_secret": K8S_SECRET,
    }
    impostor = TokenExchange(
        http, tokens, connector_id="management-dex", expected_issuer="https://dex.other.example", **common
    )
    with pytest.raises(ProviderRejected, match="issuer"):
        await impostor.authorization(user[1])
    unknown = TokenExchange(http, tokens, connector_id="nope", expected_issuer=world.remote.issuer, **common)
    with pytest.raises(ProviderRejected):
        await unknown.authorization(user[1])


async def test_a_caller_without_an_upstream_login_is_told_to_sign_in(
    world: World, user: tuple[UserTokens, Principal, Any]
) -> None:
    tokens, _, _ = user
    stranger = Principal(
        subject="x", client_id="c", scopes=frozenset(), expires_at=time.time() + 60, source="muster", family="none"
    )
    with pytest.raises(ReauthRequired):
        await ForwardToken(tokens).authorization(stranger)
