"""What the ingress knows of a caller's standing with each server: read by auth://status, list_tools, the meta
catalog's visibility and core_auth_login/logout.

`AuthState` is the seam: the identity work provides the per-session one (per-user tokens and logins in Valkey);
`PlainAuth` is muster without auth, where every caller sees every server in its plain state and nobody can sign
in or out of anything (there is no session to change).
"""

from collections.abc import Collection
from typing import Any, Protocol

from services.ingress.callers import Caller
from shared.catalog import Catalog
from shared.messages import ServerRecord
from shared.meta.auth_status import ServerAuth
from shared.meta.content import text_result
from shared.meta.core import AuthTarget


class AuthState(Protocol):
    @property
    def oauth_enabled(self) -> bool:
        """Per-server sign-in (muster's OAuth proxy) is configured."""
        ...

    def authenticated(self, caller: Caller) -> bool:
        """The caller is a signed-in session: the only kind that may change its own standing."""
        ...

    async def servers(self, caller: Caller, catalog: Catalog) -> list[ServerAuth]:
        """Every server of the catalog, as this caller stands with it."""
        ...

    async def visible(self, caller: Caller, catalog: Catalog) -> Collection[str] | None:
        """The servers whose tools the caller may see and call; None: all of them."""
        ...

    async def login(self, caller: Caller, catalog: Catalog, target: AuthTarget, login: bytes) -> dict[str, Any]:
        """core_auth_login once its prechecks passed: the sign-in challenge (core.login_challenge) or the
        connected answer (core.login_connected); `login` is the caller's own login."""
        ...

    async def logout(self, caller: Caller, catalog: Catalog, server: str) -> None:
        """Forget the caller's own token for the server (core_auth_logout once its prechecks passed)."""
        ...


def plain_auth(record: ServerRecord) -> ServerAuth:
    """What the record alone says of a server: reachable or not, and whether its spec asks for a sign-in."""
    auth = record.spec.auth if record.spec is not None else None
    exchange = auth is not None and auth.token_exchange is not None and auth.token_exchange.enabled
    issuer = auth.authorization_server.issuer if auth is not None and auth.authorization_server else ""
    scope = auth.authorization_server.scopes if auth is not None and auth.authorization_server else ""
    return ServerAuth(
        name=record.name,
        connected=record.state == "Connected" and record.exposed,
        unreachable=record.state == "Failed",
        requires_auth=auth is not None and auth.type == "oauth",
        issuer=issuer,
        scope=scope or "",
        token_forwarding=auth is not None and auth.forward_token,
        token_exchange=exchange,
        error=record.error or "",
    )


def auth_target(server: ServerAuth) -> AuthTarget:
    return AuthTarget(
        name=server.name,
        requires_auth=server.requires_auth,
        sso=server.sso,
        connected=server.connected,
        authenticated=server.authenticated,
    )


class PlainAuth:
    """Without auth: no caller is a session, every server is as its record says."""

    oauth_enabled = False

    def authenticated(self, caller: Caller) -> bool:
        return False

    async def servers(self, caller: Caller, catalog: Catalog) -> list[ServerAuth]:
        return [plain_auth(r) for r in catalog.servers.values()]

    async def visible(self, caller: Caller, catalog: Catalog) -> Collection[str] | None:
        return None

    async def login(self, caller: Caller, catalog: Catalog, target: AuthTarget, login: bytes) -> dict[str, Any]:
        # Unreachable through core_auth_login: its prechecks refuse every caller that is not a session.
        return text_result("Error: sign-in is not available without auth", True)

    async def logout(self, caller: Caller, catalog: Catalog, server: str) -> None:
        return None
