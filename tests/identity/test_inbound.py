"""/mcp as a resource server, through the real stack: a principal per request, 401 and 403 as the specs say,
for the handshake protocol and for the per-request protocol (2026-07-28) alike."""

from typing import Any

import httpx
import pytest

from shared.identity.oidc import Pkce
from tests.conftest import HEADERS
from tests.identity.conftest import PODS, PROXY_CLIENT, Agent, World, text
from tests.oidc import code_of, sign_in
from tests.oidc.harness import Browser
from tests.shared.identity.upstream import upstream_login

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
MODERN = "2026-07-28"


def discover_request() -> dict[str, Any]:
    """server/discover as a 2026-07-28 client sends it: its envelope in params._meta, mirrored in headers."""
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "server/discover",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }


def modern_headers(token: str | None) -> dict[str, str]:
    headers = {**HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": "server/discover"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def post(world: World, body: dict[str, Any], headers: dict[str, str], replica: int = 0) -> httpx.Response:
    return httpx.post(world.url(replica), json=body, headers=headers, timeout=10)


def challenge(response: httpx.Response) -> str:
    value: str = response.headers["www-authenticate"]
    return value


@pytest.mark.parametrize("protocol", ["handshake", "per-request"])
def test_a_request_without_a_token_gets_401_naming_the_resource_metadata(world: World, protocol: str) -> None:
    body, headers = (INITIALIZE, HEADERS) if protocol == "handshake" else (discover_request(), modern_headers(None))
    for replica in (0, 1):
        response = post(world, body, headers, replica)
        assert response.status_code == 401
        assert f'resource_metadata="{world.public}/.well-known/oauth-protected-resource/mcp"' in challenge(response)
    metadata = httpx.get(f"{world.public}/.well-known/oauth-protected-resource/mcp").json()
    assert metadata["resource"] == f"{world.public}/mcp" and metadata["authorization_servers"] == [world.public]


@pytest.mark.parametrize("protocol", ["handshake", "per-request"])
def test_a_token_for_another_resource_gets_401(world: World, protocol: str) -> None:
    # a real access token of the remote authorization server, for the oauth stand-in's /mcp, and a Dex ID token
    # for an audience muster does not trust: neither is muster's
    other = remote_access_token(world, "otto")
    dex_id_token = dex_id_token_for_muster_client(world, "otto")
    for token in (other, dex_id_token, "not-a-token"):
        body = INITIALIZE if protocol == "handshake" else discover_request()
        headers = {**HEADERS, "Authorization": f"Bearer {token}"} if protocol == "handshake" else modern_headers(token)
        response = post(world, body, headers)
        assert response.status_code == 401, response.text
        assert 'error="invalid_token"' in challenge(response)
        assert "resource_metadata=" in challenge(response)


@pytest.mark.parametrize("protocol", ["handshake", "per-request"])
def test_a_token_without_the_required_scope_gets_403(world: World, protocol: str) -> None:
    narrow = world.sign_in("nora", scope="other")
    body = INITIALIZE if protocol == "handshake" else discover_request()
    headers = {**HEADERS, **narrow.headers} if protocol == "handshake" else modern_headers(narrow.access_token)
    response = post(world, body, headers)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in challenge(response) and 'scope="mcp"' in challenge(response)


def test_a_per_request_client_is_checked_on_every_request(world: World) -> None:
    user = world.user("pia")
    assert post(world, discover_request(), modern_headers(user.access_token)).status_code == 200
    assert post(world, discover_request(), modern_headers(None)).status_code == 401
    assert post(world, discover_request(), modern_headers(user.access_token), replica=1).status_code == 200


async def test_a_session_belongs_to_the_user_who_opened_it(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    async with Agent(world.url(0), alice.access_token) as agent:
        assert "x_open_list" in await agent.tools()
        stolen = {**HEADERS, **bob.headers, "Mcp-Session-Id": agent.headers["Mcp-Session-Id"]}
        stolen["MCP-Protocol-Version"] = "2025-11-25"
        listing = {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}
        response = await agent.http.post(world.url(1), json=listing, headers=stolen)
        assert response.status_code == 404  # another user's session does not exist for bob
        assert "giantswarm" in text(await agent.call("x_open_list", PODS))


def remote_access_token(world: World, login: str) -> str:
    """An access token the remote authorization server issues for the oauth stand-in (muster's proxy client)."""
    pkce = Pkce()
    redirect = f"{world.public}/oauth/proxy/callback"
    resource = f"{world.muster.standins['oauth'].url}"
    params = {
        "client_id": PROXY_CLIENT,
        "response_type": "code",
        "redirect_uri": redirect,
        "scope": "openid",
        "resource": resource,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    }
    url = str(httpx.URL(f"{world.remote.issuer}/auth", params=params))
    with Browser(world.public) as browser:
        code = code_of(sign_in(browser.http, url, login))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect,
        "code_verifier": pkce.verifier,
        "client_id": PROXY_CLIENT,
        "resource": resource,
    }
    response = httpx.post(f"{world.remote.issuer}/token", data=form)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def dex_id_token_for_muster_client(world: World, login: str) -> str:
    """A Dex ID token whose audience is muster's own client: not in the trusted SSO list."""
    token: str = upstream_login(world.dex.issuer, f"{world.public}/oauth/callback", login)["id_token"]
    return token
