"""The official `mcp` client's OAuth support against muster's authorization server: discovery from the 401,
registration (dynamic, for a trusted redirect URI; and pre-registered with the registration token), the browser
step driven by the test, the code exchange, and a tool call that sees the user."""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

from muster.stack import free_port
from tests.oidc import code_of
from tests.oidc.harness import Browser, provider_for, register, serve, settings_for, start_valkey
from tests.oidc.storage import Memory

pytestmark = [pytest.mark.slow, pytest.mark.anyio]  # slow: runs oidc-provider
REDIRECT = "http://127.0.0.1:7777/callback"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    stack, valkey_url = start_valkey(tmp_path_factory.mktemp("valkey"))
    base = f"http://127.0.0.1:{free_port()}"
    provider = provider_for(base)
    try:
        with serve(settings_for(base, provider.issuer, valkey_url, oauth_trusted_redirect_uris=[REDIRECT])):
            yield base
    finally:
        provider.stop()
        stack.stop()


@dataclass
class User:
    """A person at a browser: opens the authorization URL, approves, signs in; the client gets the redirect."""

    base: str
    login: str
    redirect: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    async def open(self, url: str) -> None:
        started = time.perf_counter()
        self.redirect = await asyncio.to_thread(self._browse, url)
        self.seconds = time.perf_counter() - started

    def _browse(self, url: str) -> dict[str, str]:
        with Browser(self.base) as browser:
            first = browser.http.get(url)
            assert first.status_code == 200, first.text  # the consent screen
            return code_of(browser.through_provider(browser.approve(first), self.login))

    async def callback(self) -> AuthorizationCodeResult:
        return AuthorizationCodeResult(
            code=self.redirect["code"], state=self.redirect.get("state"), iss=self.redirect.get("iss")
        )


async def whoami(base: str, user: User, storage: Memory) -> str:
    auth = OAuthClientProvider(
        f"{base}/mcp",
        OAuthClientMetadata(client_name="sdk test", redirect_uris=[REDIRECT], scope="mcp"),
        storage,
        redirect_handler=user.open,
        callback_handler=user.callback,
    )
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool("whoami", {})
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


async def test_the_mcp_client_registers_signs_in_and_calls_a_tool_as_the_user(base: str) -> None:
    user = User(base, "vera")
    storage = Memory()
    started = time.perf_counter()
    assert await whoami(base, user, storage) == "vera vera@example.com"
    elapsed = time.perf_counter() - started
    assert storage.client is not None and storage.tokens is not None and storage.tokens.refresh_token
    print(
        f"\nlogin round trip with the mcp client: {elapsed * 1000:.0f} ms (browser part {user.seconds * 1000:.0f} ms)"
    )


async def test_a_client_registered_with_the_registration_token_signs_in_too(base: str) -> None:
    registered = (await asyncio.to_thread(register, base, REDIRECT)).json()
    storage = Memory(client=OAuthClientInformationFull.model_validate(registered))
    assert await whoami(base, User(base, "walt"), storage) == "walt walt@example.com"
    assert storage.client is not None and storage.client.client_id == registered["client_id"]


async def test_two_users_in_parallel_each_see_themselves(base: str) -> None:
    results = await asyncio.gather(
        whoami(base, User(base, "xena"), Memory()), whoami(base, User(base, "yuri"), Memory())
    )
    assert list(results) == ["xena xena@example.com", "yuri yuri@example.com"]


def test_the_sdk_finds_the_resource_metadata_in_the_401(base: str) -> None:
    response = httpx.post(f"{base}/mcp", json={})
    assert response.status_code == 401
    assert (
        f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in response.headers["www-authenticate"]
    )
