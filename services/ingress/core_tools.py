"""The core tools behind call_tool: core_mcpserver_list/get answer from the catalog's records (secrets redacted);
core_auth_login/logout change only the calling session's own standing, through the AuthState, and refuse
anyone who is not a signed-in session. Nothing here changes anything for an unauthenticated caller."""

from typing import Any, Literal

from services.ingress.auth_state import AuthState, auth_target
from services.ingress.callers import Caller
from shared.catalog import Catalog
from shared.mcpserver import API_VERSION, KIND, MCPServer, MCPServerSpec, Metadata
from shared.messages import ServerRecord
from shared.meta import core
from shared.meta.core import AuthTarget, ServerStatus

CORE_TOOL_NAMES = frozenset(t["name"] for t in core.CORE_TOOLS)


def _status(record: ServerRecord) -> ServerStatus:
    # A record written before records carried their spec still has what discovery reached the server with.
    spec = record.spec or MCPServerSpec(type="streamable-http", url=record.url or None, timeout=int(record.timeout))
    server = MCPServer(api_version=API_VERSION, kind=KIND, metadata=Metadata(name=record.name), spec=spec)
    return ServerStatus(server, record.state, record.error or "")


def _mode(catalog: Catalog) -> Literal["kubernetes", "filesystem"]:
    kubernetes = any(r.source == "kubernetes" for r in catalog.servers.values())
    return "kubernetes" if kubernetes else "filesystem"


class CoreTools:
    def __init__(self, auth: AuthState) -> None:
        self.auth = auth

    async def call(
        self, name: str, arguments: dict[str, Any], caller: Caller, catalog: Catalog, login: bytes
    ) -> dict[str, Any]:
        """The result of core tool `name` (one of CORE_TOOL_NAMES); `login` is the caller's own login, if any."""
        if name == core.MCPSERVER_LIST:
            return core.mcpserver_list([_status(r) for r in catalog.servers.values()], arguments, _mode(catalog))
        if name == core.MCPSERVER_GET:
            return core.mcpserver_get([_status(r) for r in catalog.servers.values()], arguments)
        session = self.auth.authenticated(caller)
        target = await self._target(caller, catalog, arguments.get("server"))
        if name == core.AUTH_LOGIN:
            refused = core.login_precheck(arguments, session, target, self.auth.oauth_enabled)
            if refused is not None:
                return refused
            assert target is not None  # the prechecks refuse a server nobody knows
            return await self.auth.login(caller, catalog, target, login)
        refused = core.logout_precheck(arguments, session, target)
        if refused is not None:
            return refused
        assert target is not None
        await self.auth.logout(caller, catalog, target.name)
        return core.logout_done(target.name)

    async def _target(self, caller: Caller, catalog: Catalog, server: Any) -> AuthTarget | None:
        if not isinstance(server, str) or server not in catalog.servers:
            return None
        found = next((s for s in await self.auth.servers(caller, catalog) if s.name == server), None)
        return auth_target(found) if found is not None else None
