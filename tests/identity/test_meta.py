"""The meta-tools with sign-in on: call_tool reaches the user's own servers as the user, and core_auth_login and
core_auth_logout start and end the user's login to a per-server-OAuth server, for that user alone."""

import asyncio
import json
import re
from typing import Any

import pytest

from tests.identity.conftest import PODS, Agent, World, text
from tests.identity.test_downstream import log_in_at_the_server

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
META = 2


async def inner(agent: Agent, name: str, arguments: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    """A core or server tool through call_tool: (isError, its first text, the whole envelope)."""
    envelope = json.loads(text(await agent.call("call_tool", {"name": name, "arguments": arguments})))
    return envelope["isError"], envelope["content"][0]["text"], envelope


async def test_call_tool_reaches_the_users_own_servers_as_the_user(world: World) -> None:
    async with Agent(world.url(META), world.user("mia").access_token) as agent:
        assert "call_tool" in await agent.tools() and "x_sso_list" not in await agent.tools()
        error, listed, _ = await inner(agent, "x_sso_list", PODS)
        assert not error and "giantswarm" in listed
    assert world.muster.standins["sso"].stats()["callers"]["mia@example.com"] == 1


async def test_core_auth_login_and_logout_change_the_callers_own_standing(world: World) -> None:
    async with Agent(world.url(META), world.user("max").access_token) as agent:
        error, challenge, _ = await inner(agent, "core_auth_login", {"server": "oauth"})
        found = re.search(r"(\S+/oauth/proxy/start\?state=\S+)", challenge)
        assert not error and found is not None, challenge
        url = found.group(1)
        assert url.startswith(f"{world.public}/oauth/proxy/start?state=")
        await asyncio.to_thread(log_in_at_the_server, world, url, "max")
        error, already, _ = await inner(agent, "core_auth_login", {"server": "oauth"})
        assert not error and "already authenticated" in already
        error, listed, _ = await inner(agent, "x_oauth_list", PODS)
        assert not error and "giantswarm" in listed
        error, done, _ = await inner(agent, "core_auth_logout", {"server": "oauth"})
        assert not error and "logged out" in done
        error, gone, _ = await inner(agent, "x_oauth_list", PODS)
        assert error, gone
    assert world.muster.standins["oauth"].stats()["callers"]["max@example.com"] == 1
