"""Each server is called as the user, in the mode its MCPServer names, and each user sees only the servers they can
call: forwardToken, tokenExchange, per-server OAuth (login through /oauth/proxy/* and the list_changed after it),
and a server without auth that everybody shares."""

import asyncio
import json
from typing import Any

import anyio
import httpx
import pytest

from shared import errors
from tests.identity.conftest import PODS, Agent, World, text
from tests.oidc import EXCHANGE, K8S_CLIENT, K8S_SECRET, sign_in
from tests.shared.identity.upstream import upstream_login

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

OAUTH_TOOLS = {"x_oauth_list", "x_oauth_get"}
SSO_TOOLS = {"x_sso_list", "x_sso_get"}
EXCHANGE_TOOLS = {"x_exchange_list", "x_exchange_get"}


async def test_forward_token_calls_the_server_with_the_users_own_id_token(world: World) -> None:
    before = world.muster.standins["sso"].stats()["callers"].get("frank@example.com", 0)
    async with Agent(world.url(0), world.user("frank").access_token) as agent:
        assert await agent.tools() >= SSO_TOOLS
        assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
    assert world.muster.standins["sso"].stats()["callers"]["frank@example.com"] == before + 1


async def test_token_exchange_calls_the_server_with_an_exchanged_token_reused_until_it_expires(world: World) -> None:
    stand_in = world.muster.standins["exchange"]
    async with Agent(world.url(1), world.user("erin").access_token) as agent:
        assert await agent.tools() >= EXCHANGE_TOOLS
        exchanges = world.dex.stats()["exchanges"]
        for _ in range(3):
            assert "giantswarm" in text(await agent.call("x_exchange_list", PODS))
    assert stand_in.stats()["callers"]["erin@example.com"] >= 3
    # the listing may have exchanged on one worker; the three calls exchange at most once on each of the two
    assert world.dex.stats()["exchanges"] - exchanges <= 2
    # the exchange stand-in takes only tokens minted for dex-k8s-authenticator (muster's own ID token would be
    # refused as invalid); what it refused is discovery's listing without a token
    assert all("Missing Authorization header" in reason for reason in stand_in.stats()["refused"])


async def test_a_per_server_login_makes_the_server_appear_for_that_user_alone(world: World) -> None:
    uma, vic = world.user("uma"), world.user("vic")
    async with Agent(world.url(1), uma.access_token) as agent, Agent(world.url(1), vic.access_token) as other:
        assert not OAUTH_TOOLS & await agent.tools()
        refused = await agent.call("x_oauth_list", PODS)
        assert refused["error"]["code"] == errors.AUTH_REQUIRED, refused
        login_url = refused["error"]["data"]["loginUrl"]
        assert login_url.startswith(f"{world.public}/oauth/proxy/start?state=")
        assert login_url in refused["error"]["message"]
        async with events(agent) as uma_events, events(other) as vic_events:
            await asyncio.to_thread(log_in_at_the_server, world, login_url, "uma")
            with anyio.fail_after(2):
                changed = await uma_events.get()
            assert changed == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
            await asyncio.sleep(0.5)
            assert vic_events.empty()  # vic did not log in: his lists did not change
        assert await agent.tools() >= OAUTH_TOOLS
        assert "giantswarm" in text(await agent.call("x_oauth_list", PODS))
        assert not OAUTH_TOOLS & await other.tools()
        assert (await other.call("x_oauth_list", PODS))["error"]["code"] == errors.AUTH_REQUIRED
    assert world.muster.standins["oauth"].stats()["callers"]["uma@example.com"] == 1


async def test_auth_status_tells_each_session_what_it_must_do(world: World) -> None:
    async with Agent(world.url(0), world.user("ava").access_token) as agent:
        before = await status(agent)
        assert before["oauth"]["status"] == "auth_required" and before["oauth"]["auth_tool"] == "core_auth_login"
        assert before["oauth"]["issuer"] == world.remote.issuer
        assert before["sso"] == {"name": "sso", "status": "connected", "token_forwarding_enabled": True}
        assert before["exchange"]["status"] == "connected" and before["open"]["status"] == "connected"
        refused = await agent.call("x_oauth_list", PODS)
        await asyncio.to_thread(log_in_at_the_server, world, refused["error"]["data"]["loginUrl"], "ava")
        after = await status(agent)
    assert after["oauth"] == {"name": "oauth", "status": "connected"}


async def status(agent: Agent) -> dict[str, dict[str, Any]]:
    """auth://status as this session reads it, by server."""
    read = await agent.request("resources/read", {"uri": "auth://status"})
    servers = json.loads(read["result"]["contents"][0]["text"])["servers"]
    return {s["name"]: s for s in servers}


async def test_two_users_in_parallel_see_only_their_own_servers_and_results(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    async with Agent(world.url(0), alice.access_token) as a, Agent(world.url(1), bob.access_token) as b:
        listings = await asyncio.gather(a.tools(), b.tools())
        assert listings[0] == listings[1]  # neither logged in to the oauth server; both see the same servers

        async def secrets(agent: Agent) -> list[str]:
            replies = await asyncio.gather(*(agent.call("x_sso_list", {"resourceType": "secrets"}) for _ in range(10)))
            return [text(r) for r in replies]

        alices, bobs = await asyncio.gather(secrets(a), secrets(b))
    # the stand-in's RBAC lets alice read secrets and refuses bob: each result is its own user's
    assert all("forbidden" not in t for t in alices)
    assert all("forbidden" in t and "bob@example.com" in t for t in bobs)


async def test_a_kubernetes_unauthorized_answer_is_a_result_not_an_auth_failure(world: World) -> None:
    sso = world.muster.standins["sso"]
    async with Agent(world.url(0), world.user("frank").access_token) as agent:
        await agent.call("x_sso_list", PODS)
        refreshes = world.refreshes()
        sso.fault(action="tool_error", tool="list", message="Unauthorized", count=1)
        try:
            answer = await agent.call("x_sso_list", PODS)
        finally:
            sso.clear_faults()
    assert answer["result"]["isError"] is True and text(answer) == "Unauthorized"
    assert world.refreshes() == refreshes


async def test_a_clis_own_id_token_is_accepted_and_forwarded_as_it_is(world: World) -> None:
    """SSO forwarding: a Dex ID token for a trusted audience (a CLI's client) works as a bearer on /mcp."""
    login = await asyncio.to_thread(upstream_login, world.dex.issuer, f"{world.public}/oauth/callback", "cleo")
    async with httpx.AsyncClient() as http:
        exchanged = await http.post(
            f"{world.dex.issuer}/token",
            auth=(K8S_CLIENT, K8S_SECRET),
            data={
                "grant_type": EXCHANGE,
                "subject_token": login["id_token"],
                "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
                "connector_id": "local",
            },
        )
    cli_token = exchanged.json()["access_token"]  # an ID token of Dex whose audience is dex-k8s-authenticator
    async with Agent(world.url(1), cli_token) as agent:
        assert await agent.tools() >= SSO_TOOLS | EXCHANGE_TOOLS
        assert "giantswarm" in text(await agent.call("x_sso_list", PODS))
        assert "giantswarm" in text(await agent.call("x_exchange_list", PODS))
    assert world.muster.standins["sso"].stats()["callers"]["cleo@example.com"] == 1
    assert world.muster.standins["exchange"].stats()["callers"]["cleo@example.com"] == 1


class events:
    """The notifications an agent's GET stream delivers, as they arrive."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.open = asyncio.Event()

    async def __aenter__(self) -> "asyncio.Queue[dict[str, Any]]":
        self.task = asyncio.create_task(self._read())
        with anyio.fail_after(5):
            await self.open.wait()
        await asyncio.sleep(0.2)  # the replica records that it holds the stream
        return self.queue

    async def __aexit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _read(self) -> None:
        headers = {**self.agent.headers, "Accept": "text/event-stream"}
        async with httpx.AsyncClient(timeout=None) as http, http.stream("GET", self.agent.url, headers=headers) as s:
            assert s.status_code == 200
            self.open.set()
            async for line in s.aiter_lines():
                if line.startswith("data: "):
                    await self.queue.put(json.loads(line[6:]))


def log_in_at_the_server(world: World, login_url: str, user: str) -> None:
    """The user's browser: muster's /oauth/proxy/start, the server's authorization server, muster's callback."""
    with httpx.Client(timeout=15) as browser:
        start = browser.get(login_url)
        assert start.status_code == 302, start.text
        back = sign_in(browser, start.headers["location"], user)
        done = browser.get(back.headers["location"])
        assert done.status_code == 200 and "Logged in" in done.text, done.text
