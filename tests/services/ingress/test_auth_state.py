"""Without auth, auth://status and list_tools say what each server's record says, and nobody signs in or out."""

from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from services.ingress.auth_state import PlainAuth, plain_auth
from services.ingress.callers import Session
from services.ingress.core_tools import CoreTools
from services.ingress.forward import Forwarder
from services.ingress.meta import Meta
from shared.catalog import Catalog
from shared.mcpserver import MCPServerSpec
from shared.messages import ServerRecord
from shared.meta import core
from shared.meta.auth_status import contents

pytestmark = pytest.mark.anyio

OAUTH = {"type": "oauth", "authorizationServer": {"issuer": "https://dex.example", "scopes": "openid groups"}}


def record(name: str, state: Any = "Connected", **spec: Any) -> ServerRecord:
    declared = MCPServerSpec.model_validate({"type": "streamable-http", "url": f"http://{name}/mcp", **spec})
    return ServerRecord(name=name, url=f"http://{name}/mcp", state=state, spec=declared)


CATALOG = Catalog(
    [
        record("plain"),
        record("login", auth=OAUTH),
        record("sso", auth={"type": "oauth", "forwardToken": True}),
        record("down", state="Failed"),
    ]
)
CALLER = Session("s1", "2025-11-25", {}, "anonymous")


@dataclass
class Context:
    caller: Session


async def test_auth_status_without_auth_shows_each_server_as_its_record_says() -> None:
    servers = await PlainAuth().servers(CALLER, CATALOG)
    body = orjson.loads(contents(servers, PlainAuth().authenticated(CALLER))["contents"][0]["text"])
    assert body == {
        "servers": [
            {"name": "down", "status": "disconnected"},
            {
                "name": "login",
                "status": "auth_required",
                "issuer": "https://dex.example",
                "scope": "openid groups",
                "auth_tool": "core_auth_login",
            },
            {"name": "plain", "status": "connected"},
            {"name": "sso", "status": "auth_required", "token_forwarding_enabled": True},
        ]
    }


def test_a_record_without_a_spec_is_a_plain_server() -> None:
    bare = ServerRecord(name="old", url="http://old/mcp", state="Connected")
    assert not plain_auth(bare).requires_auth and plain_auth(bare).connected


async def test_list_tools_names_the_servers_that_need_a_login_but_not_sso_ones() -> None:
    meta = Meta("meta", Forwarder.__new__(Forwarder), PlainAuth())
    view = await meta.catalog_view(Context(CALLER), CATALOG, "list_tools")  # type: ignore[arg-type]
    assert list(view.servers_requiring_auth) == ["login"]
    assert view.visible is None


async def test_login_and_logout_change_nothing_for_a_caller_that_is_not_a_session() -> None:
    tools = CoreTools(PlainAuth())
    for name in (core.AUTH_LOGIN, core.AUTH_LOGOUT):
        answer = await tools.call(name, {"server": "login"}, CALLER, CATALOG, b"")
        assert answer == {"content": [{"type": "text", "text": core.MISSING_SESSION}], "isError": True}


class SeesPlainOnly(PlainAuth):
    async def visible(self, caller: Any, catalog: Catalog) -> set[str]:
        return {"plain"}


async def test_what_a_caller_may_not_see_is_not_in_its_meta_catalog_but_the_core_tools_are() -> None:
    tool = {"name": "get", "description": "Get one", "inputSchema": {"type": "object"}}
    catalog = Catalog(
        [r.model_copy(update={"tools": [tool], "prefix": r.name}) for r in (record("plain"), record("login"))]
    )
    meta = Meta("meta", Forwarder.__new__(Forwarder), SeesPlainOnly())
    view = await meta.catalog_view(Context(CALLER), catalog, "filter_tools")  # type: ignore[arg-type]
    assert [t["name"] for t in view.visible_tools()] == ["x_plain_get", *(t["name"] for t in core.CORE_TOOLS)]
    assert view.find_tool("x_login_get") is None and view.find_tool("x_plain_get") is not None
