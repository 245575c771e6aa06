"""The official `mcp` client's OAuth support against the real stack: discovery from the 401, client identification
(a client ID metadata document at an https URL; registration with the registration token; dynamic registration of
a trusted redirect URI), the browser step driven by the test, then tool calls that reach each server as the user."""

import asyncio
from dataclasses import dataclass, field

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

from tests.identity.conftest import PODS, REDIRECT, World
from tests.oidc import code_of
from tests.oidc.harness import Browser, register
from tests.oidc.storage import Memory

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@dataclass
class Person:
    """A user at a browser: opens the authorization URL, approves the client, signs in at Dex."""

    base: str
    login: str
    redirect: dict[str, str] = field(default_factory=dict)

    async def open(self, url: str) -> None:
        self.redirect = await asyncio.to_thread(self._browse, url)

    def _browse(self, url: str) -> dict[str, str]:
        with Browser(self.base) as browser:
            first = browser.http.get(url)
            assert first.status_code == 200, first.text  # muster's consent screen
            return code_of(browser.through_provider(browser.approve(first), self.login))

    async def callback(self) -> AuthorizationCodeResult:
        return AuthorizationCodeResult(
            code=self.redirect["code"], state=self.redirect.get("state"), iss=self.redirect.get("iss")
        )


async def session_of(world: World, person: Person, storage: Memory, metadata_url: str | None = None) -> list[str]:
    """Signs in with the SDK, lists the tools, and calls the forwardToken and the tokenExchange server."""
    auth = OAuthClientProvider(
        world.url(0),
        OAuthClientMetadata(client_name="sdk test", redirect_uris=[REDIRECT], scope="mcp"),
        storage,
        redirect_handler=person.open,
        callback_handler=person.callback,
        client_metadata_url=metadata_url,
    )
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        Client(streamable_http_client(world.url(0), http_client=http)) as client,
    ):
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"x_sso_list", "x_exchange_list", "x_open_list"} <= tools
        texts = []
        for tool in ("x_sso_list", "x_exchange_list"):
            result = await client.call_tool(tool, PODS)
            assert not result.is_error, result
            texts.append(result.content[0].text)  # type: ignore[union-attr]
    return texts


def callers(world: World, server: str, email: str) -> int:
    count: int = world.muster.standins[server].stats()["callers"].get(email, 0)
    return count


async def test_the_mcp_client_signs_in_with_a_client_id_metadata_document(world: World) -> None:
    before = world.documents.fetched
    storage = Memory()
    await session_of(world, Person(world.public, "cora"), storage, world.documents.client_id)
    assert storage.client is not None and storage.client.client_id == world.documents.client_id
    assert world.documents.fetched > before  # muster fetched the document at its https URL
    assert callers(world, "sso", "cora@example.com") == 1 and callers(world, "exchange", "cora@example.com") == 1


async def test_the_mcp_client_signs_in_as_a_client_registered_with_the_registration_token(world: World) -> None:
    registered = (await asyncio.to_thread(register, world.public, REDIRECT)).json()
    storage = Memory(client=OAuthClientInformationFull.model_validate(registered))
    await session_of(world, Person(world.public, "reg"), storage)
    assert storage.client is not None and storage.client.client_id == registered["client_id"]
    assert callers(world, "sso", "reg@example.com") == 1


async def test_two_users_of_the_mcp_client_in_parallel_each_reach_the_servers_as_themselves(world: World) -> None:
    storage_a, storage_b = Memory(), Memory()
    await asyncio.gather(
        session_of(world, Person(world.public, "xena"), storage_a),  # dynamic registration: a trusted redirect URI
        session_of(world, Person(world.public, "yuri"), storage_b),
    )
    assert storage_a.tokens is not None and storage_b.tokens is not None
    assert storage_a.tokens.access_token != storage_b.tokens.access_token
    for user in ("xena", "yuri"):
        assert callers(world, "sso", f"{user}@example.com") == 1
        assert callers(world, "exchange", f"{user}@example.com") == 1
