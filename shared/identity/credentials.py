"""The credentials the worker sends to a remote server as the user, one small class per MCPServer `spec.auth`
mode, each with one method per call: `authorization(principal)` -> the Authorization header value, and
`reject(principal, value)` when the server answered that value with 401 (the next `authorization` then refreshes
or exchanges again, once).

Each keeps an in-process cache until shortly before expiry, so a call costs a dict lookup in the common case;
a miss goes to Valkey (and, for an expiring token, to the single-flight refresh). A cache entry is keyed by the
principal's login, never shared between users.
"""

import time
from collections.abc import Callable, Hashable
from typing import Protocol

import httpx

from shared.identity import keys
from shared.identity.cache import Expiring
from shared.identity.errors import IdentityError, InvalidToken, ProviderRejected, ReauthRequired
from shared.identity.oidc import AuthServer, Metadata, unverified_claims
from shared.identity.principal import Principal
from shared.identity.refresh import Refresher

ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"


class Credential(Protocol):
    async def authorization(self, principal: Principal) -> str: ...

    def reject(self, principal: Principal, authorization: str) -> None: ...


def bearer(authorization: str) -> str:
    return authorization.removeprefix("Bearer ")


class UserTokens:
    """A user's upstream (Dex) ID token, refreshed before it expires, single-flight across processes."""

    def __init__(self, upstream: AuthServer, refresher: Refresher, *, keep_seconds: float = 30 * 86400) -> None:
        self.upstream = upstream
        self.refresher = refresher
        self.keep_seconds = keep_seconds
        self.cache = Expiring()
        self.rejected = Expiring()  # per login: the ID token a server refused, until the next refresh

    async def id_token(self, principal: Principal) -> str:
        if principal.id_token is not None:
            return principal.id_token  # forwarded by the caller and validated on /mcp
        family = principal.family
        if family is None:
            raise ReauthRequired("this caller has no upstream login")
        token = self.cache.get(family)
        if token is not None:
            return token
        async with self.cache.lock(family):
            token = self.cache.get(family)
            if token is not None:
                return token
            tokens = await self.refresher.fresh(
                keys.upstream(family), self.upstream.refresh, lambda _: self.keep_seconds, self.rejected.get(family)
            )
            self.rejected.entries.pop(family, None)
            if tokens.id_token is None or tokens.id_expires_at is None:
                raise ReauthRequired("the upstream login has no ID token; sign in again")
            seconds = tokens.refresh_at(self.refresher.margin) - time.time()
            if tokens.refresh_token is None:  # a forwarded ID token: nothing to refresh, usable until it expires
                seconds = tokens.valid_until - time.time()
            if seconds > 0:
                self.cache.put(family, tokens.id_token, seconds)
            return tokens.id_token

    def reject(self, principal: Principal, token: str) -> None:
        """A server refused this ID token: the next call refreshes it (once, across every process), unless another
        refresh replaced it already."""
        if principal.family is not None:
            self.cache.entries.pop(principal.family, None)
            self.rejected.put(principal.family, token, 600)


class ForwardToken:
    """`forwardToken: true`: the user's upstream ID token, as is."""

    def __init__(self, tokens: UserTokens) -> None:
        self.tokens = tokens

    async def authorization(self, principal: Principal) -> str:
        return "Bearer " + await self.tokens.id_token(principal)

    def reject(self, principal: Principal, authorization: str) -> None:
        self.tokens.reject(principal, bearer(authorization))


class TokenExchange:
    """`tokenExchange`: RFC 8693 at a remote Dex, the user's ID token in, an ID token for the remote cluster out.

    The result is cached per (user login, endpoint) until `margin` seconds before it expires; its `iss` must be
    `expected_issuer` (a proxy in front of the remote Dex must not mint tokens of its own).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: UserTokens,
        *,
        endpoint: str,
        connector_id: str,
        expected_issuer: str | None = None,
        client_id: str,
        client_secret: str | None = None,
        scopes: str = "openid profile email groups",
        audience: str | None = None,
        margin: float = 300.0,
    ) -> None:
        issuer = expected_issuer or endpoint.rsplit("/", 1)[0]
        self.server = AuthServer(http, Metadata(issuer=issuer, token_endpoint=endpoint), client_id, client_secret)
        self.tokens = tokens
        self.expected_issuer = issuer
        self.connector_id = connector_id
        self.scopes = scopes
        self.audience = audience
        self.margin = margin
        self.cache = Expiring()
        self.observe: Callable[[str], None] = lambda outcome: None  # each exchange's outcome (metrics)

    async def authorization(self, principal: Principal) -> str:
        key = (principal.family or principal.id_token, principal.subject)
        token = self.cache.get(key)
        if token is None:
            async with self.cache.lock(key):
                token = self.cache.get(key) or await self._exchange(key, principal)
        return "Bearer " + token

    async def _exchange(self, key: Hashable, principal: Principal) -> str:
        form = {
            "grant_type": EXCHANGE_GRANT,
            "subject_token": await self.tokens.id_token(principal),
            "subject_token_type": ID_TOKEN_TYPE,
            "requested_token_type": ID_TOKEN_TYPE,
            "connector_id": self.connector_id,
            "scope": self.scopes,
        }
        if self.audience:
            form["audience"] = self.audience
        try:
            body = await self.server.token(**form)
        except ReauthRequired:
            self.observe("rejected")
            raise
        except IdentityError:
            self.observe("error")
            raise
        self.observe("ok")
        token = str(body["access_token"])
        try:
            claims = unverified_claims(token)
        except InvalidToken as exc:
            raise ProviderRejected("the token exchange did not return a JWT") from exc
        if claims.get("iss") != self.expected_issuer:
            raise ProviderRejected("the exchanged token's issuer is not the expected issuer")
        expires = float(claims.get("exp", time.time() + float(body.get("expires_in", 300))))
        life = expires - time.time()
        seconds = life - min(self.margin, life / 2)  # a token shorter-lived than the margin is still reused a while
        if seconds > 0:
            self.cache.put(key, token, seconds)
        return token

    def reject(self, principal: Principal, authorization: str) -> None:
        """The remote server refused the exchanged token: the next call exchanges again."""
        self.cache.entries.pop((principal.family or principal.id_token, principal.subject), None)
