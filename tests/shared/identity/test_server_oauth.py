"""Per-server OAuth end to end: the stand-in as an OAuth-protected server of its own authorization server
(oidc-provider), muster's /oauth/proxy/* in the browser, and the worker's side (ServerOAuth) in this process."""

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from muster.stack import Stack, free_port
from shared.identity import keys
from shared.identity.errors import LoginRequired
from shared.identity.principal import Principal
from shared.identity.refresh import Refresher
from shared.identity.sealing import Keyring
from shared.identity.server_oauth import ServerOAuth
from shared.identity.store import SealedStore, Tokens, TokenStore
from tests.conftest import ROOT, result
from tests.oidc import OidcProvider, client, sign_in
from tests.oidc.harness import new_key, provider_for, serve, settings_for, start_valkey
from tests.shared.identity.test_credentials import call

pytestmark = [pytest.mark.slow, pytest.mark.anyio]  # slow: runs oidc-provider
PROXY_CLIENT = "muster-proxy"


@dataclass
class World:
    base: str
    key: str
    valkey_url: str
    remote_as: OidcProvider
    standin: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("valkey")
    stack, valkey_url = start_valkey(folder)
    base = f"http://127.0.0.1:{free_port()}"
    standin = f"http://127.0.0.1:{free_port()}"
    dex = provider_for(base)
    remote_as = OidcProvider(
        [client(PROXY_CLIENT, [f"{base}/oauth/proxy/callback"])],
        env={"OIDC_RESOURCES": orjson.dumps({f"{standin}/mcp": "mcp"}).decode()},
    ).start()
    standins = Stack(folder, log=lambda _: None)
    key = new_key()
    try:
        port = standin.rsplit(":", 1)[1]
        standins.python(
            "standin", "demo.kubernetes", "--port", port, "--oauth-server", remote_as.issuer,
            env={"PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        standins.wait_tcp(int(port), "standin")
        settings = settings_for(base, dex.issuer, valkey_url, encryption_key=key, oauth_proxy_client_id=PROXY_CLIENT)
        with serve(settings):
            yield World(base, key, valkey_url, remote_as, standin)
    finally:
        standins.stop()
        remote_as.stop()
        dex.stop()
        stack.stop()


@pytest.fixture
async def oauth(world: World) -> AsyncIterator[ServerOAuth]:
    """The worker's side: its own Valkey connection, the same keyring."""
    valkey = Redis.from_url(world.valkey_url)
    sealed = SealedStore(valkey, Keyring([base64.b64decode(world.key)]))
    async with httpx.AsyncClient(timeout=10) as http:
        yield ServerOAuth(
            http, TokenStore(sealed), Refresher(valkey, sealed), public_url=world.base, client_id=PROXY_CLIENT
        )
    await valkey.aclose()


def principal(subject: str) -> Principal:
    return Principal(subject=subject, client_id="c", scopes=frozenset(), expires_at=time.time() + 600, source="muster")


def browse_login(login_url: str, user: str) -> httpx.Response:
    """The user opens the login link: muster -> the remote authorization server -> muster's proxy callback."""
    with httpx.Client(timeout=10) as browser:
        start = browser.get(login_url)
        assert start.status_code == 302, start.text
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert query["code_challenge_method"] == ["S256"] and query["resource"][0].endswith("/mcp")
        back = sign_in(browser, start.headers["location"], user)
        return browser.get(back.headers["location"])


async def test_a_user_logs_in_to_a_remote_server_through_muster_and_calls_it_as_themselves(
    world: World, oauth: ServerOAuth
) -> None:
    refused = await asyncio.to_thread(call, world.standin, None)
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    remote = await oauth.discover(f"{world.standin}/mcp", challenge)
    assert remote.metadata.issuer == world.remote_as.issuer and remote.resource == f"{world.standin}/mcp"

    with pytest.raises(LoginRequired) as info:
        await oauth.authorization(principal("quinn"), "remote", f"{world.standin}/mcp")
    assert info.value.url.startswith(f"{world.base}/oauth/proxy/start?state=")
    done = await asyncio.to_thread(browse_login, info.value.url, "quinn")
    assert done.status_code == 200 and "Logged in" in done.text, done.text

    header = await oauth.authorization(principal("quinn"), "remote", f"{world.standin}/mcp")
    answer = await asyncio.to_thread(call, world.standin, header)
    assert answer.status_code == 200 and result(answer)["result"]["isError"] is False, answer.text
    stats = await asyncio.to_thread(lambda: httpx.get(f"{world.standin}/_standin/stats").json())
    assert stats["callers"]["quinn@example.com"] >= 1
    # another user has no login there: their own login link, not quinn's token
    with pytest.raises(LoginRequired):
        await oauth.authorization(principal("rita"), "remote", f"{world.standin}/mcp")


def replay(url: str, user: str) -> list[int]:
    """Logs in, then opens the callback again and the login link again: the statuses of the three."""
    with httpx.Client(timeout=10) as browser:
        start = browser.get(url)
        callback = sign_in(browser, start.headers["location"], user).headers["location"]
        return [browser.get(callback).status_code, browser.get(callback).status_code, browser.get(url).status_code]


def forge_issuer(url: str, user: str) -> httpx.Response:
    with httpx.Client(timeout=10) as browser:
        start = browser.get(url)
        back = sign_in(browser, start.headers["location"], user)
        return browser.get(back.headers["location"].replace("iss=", "iss=https%3A%2F%2Fevil.example&was="))


async def test_a_login_link_works_once(world: World, oauth: ServerOAuth) -> None:
    url = await oauth.login_url("sam", "remote", f"{world.standin}/mcp")
    # the state is taken by the first callback: a replayed callback or link does nothing
    assert await asyncio.to_thread(replay, url, "sam") == [200, 400, 400]


async def test_an_answer_from_another_issuer_is_refused(world: World, oauth: ServerOAuth) -> None:
    url = await oauth.login_url("tom", "remote", f"{world.standin}/mcp")
    response = await asyncio.to_thread(forge_issuer, url, "tom")
    assert response.status_code == 400 and "another issuer" in response.text
    assert await oauth.store.server("tom", "remote") is None


async def test_an_expiring_server_token_is_refreshed_with_the_resource(world: World, oauth: ServerOAuth) -> None:
    url = await oauth.login_url("una", "remote", f"{world.standin}/mcp")
    assert (await asyncio.to_thread(browse_login, url, "una")).status_code == 200
    name = keys.server_token("una", "remote")
    stored = await oauth.store.store.get(name, Tokens)
    assert stored is not None and stored.resource == f"{world.standin}/mcp"
    await oauth.store.store.put(name, stored.model_copy(update={"expires_at": time.time() - 1}), 3600)
    before = world.remote_as.stats()["refreshes"]
    header = await oauth.authorization(principal("una"), "remote", f"{world.standin}/mcp")
    assert world.remote_as.stats()["refreshes"] == before + 1
    assert (await asyncio.to_thread(call, world.standin, header)).status_code == 200


async def test_muster_publishes_its_client_id_metadata_document(world: World) -> None:
    doc = await asyncio.to_thread(lambda: httpx.get(f"{world.base}/.well-known/oauth-client.json").json())
    assert doc["redirect_uris"] == [f"{world.base}/oauth/proxy/callback"]
    assert doc["token_endpoint_auth_method"] == "none" and doc["grant_types"] == ["authorization_code", "refresh_token"]
