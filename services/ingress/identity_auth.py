"""The AuthState of muster with sign-in on (services/ingress/auth_state.py is the seam): every caller is a user
who passed the bearer check; what each one stands with each server is the Visibility's (services/ingress/
visibility.py), and core_auth_login/logout start and end the user's own login to a per-server-OAuth server."""

from collections.abc import Collection
from typing import Any

from services.ingress.callers import Caller
from services.ingress.visibility import Visibility
from shared import streams
from shared.catalog import Catalog
from shared.messages import LoginChanged
from shared.meta.auth_status import ServerAuth
from shared.meta.content import text_result
from shared.meta.core import AuthTarget, already_authenticated, login_challenge
from shared.valkey import Outbox


class IdentityAuth:
    oauth_enabled = True

    def __init__(self, visibility: Visibility, outbox: Outbox) -> None:
        self.visibility = visibility
        self.outbox = outbox

    def authenticated(self, caller: Caller) -> bool:
        return True  # with sign-in on, no request gets this far without a user

    async def servers(self, caller: Caller, catalog: Catalog) -> list[ServerAuth]:
        return await self.visibility.auth_status(caller.principal)

    async def visible(self, caller: Caller, catalog: Catalog) -> Collection[str] | None:
        return None  # the catalog a request is served from is already the caller's own

    async def login(self, caller: Caller, catalog: Catalog, target: AuthTarget, login: bytes) -> dict[str, Any]:
        owner = caller.principal
        if await self.visibility.signed_in(owner, target.name):
            # The user has just logged in through another replica, whose news has not reached this one yet: the
            # agent was told to run core_auth_login again once signed in, and it may be served here first.
            self.visibility.login_changed(owner, target.name)
            if await self.visibility.listed(owner, login, target.name):
                return already_authenticated(target.name)
        url = await self.visibility.login_url(owner, target.name)
        if url is None:
            return text_result(f"Error: muster cannot start a login to '{target.name}' now; try again later", True)
        return login_challenge(target.name, "auth_required", url)

    async def logout(self, caller: Caller, catalog: Catalog, server: str) -> None:
        """The user's own token for the server goes; every replica and worker forgets what it derived from it."""
        await self.visibility.logout(caller.principal, server)
        self.outbox.publish(streams.CONTROL, LoginChanged(subject=caller.principal, server=server))
