"""The credentials the worker sends to a remote server as the user, one small class per MCPServer `spec.auth`
mode, each with one method per call: `authorization(principal)` -> the Authorization header value.

Each keeps an in-process cache until shortly before expiry, so a call costs a dict lookup in the common case;
a miss goes to Valkey (and, for an expiring token, to the single-flight refresh). A cache entry is keyed by the
principal's login, never shared between users.
"""

import time
from collections.abc import Hashable
from typing import Protocol

import httpx

from shared.identity import keys
from shared.identity.cache import Expiring
from shared.identity.errors import InvalidToken, ProviderRejected, ReauthRequired
from shared.identity.oidc import AuthServer, Metadata, unverified_claims
from shared.identity.principal import Principal
from shared.identity.refresh import Refresher

ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"


class Credential(Protocol):
    async def authorization(self, principal: Principal) -> str: ...


class UserTokens:
    """A user's upstream (Dex) ID token, refreshed before it expires, single-flight across processes."""

    def __init__(self, upstream: AuthServer, refresher: Refresher, *, keep_seconds: float = 30 * 86400) -> None:
        self.upstream = upstream
        self.refresher = refresher
        self.keep_seconds = keep_seconds
        self.cache = Expiring()

    async def id_token(self, principal: Principal) -> str:
        if principal.id_token is not None:
            return principal.id_token  # forwarded by the caller and validated on /mcp
        if principal.family is None:
            raise ReauthRequired("this caller has no upstream login")
        token = self.cache.get(principal.family)
        if token is not None:
            return token
        async with self.cache.lock(principal.family):
            token = self.cache.get(principal.family)
            if token is not None:
                return token
            tokens = await self.refresher.fresh(
                keys.upstream(principal.family), self.upstream.refresh, lambda _: self.keep_seconds
            )
            if tokens.id_token is None or tokens.id_expires_at is None:
                raise ReauthRequired("the upstream login has no ID token; sign in again")
            seconds = tokens.valid_until - self.refresher.margin - time.time()
            if seconds > 0:
                self.cache.put(principal.family, tokens.id_token, seconds)
            return tokens.id_token

    def forget(self, family: str) -> None:
        """Drops a cached token (after a downstream 401), so that the next call refreshes."""
        self.cache.entries.pop(family, None)


class ForwardToken:
    """`forwardToken: true`: the user's upstream ID token, as is."""

    def __init__(self, tokens: UserTokens) -> None:
        self.tokens = tokens

    async def authorization(self, principal: Principal) -> str:
        return "Bearer " + await self.tokens.id_token(principal)


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
        body = await self.server.token(**form)
        token = str(body["access_token"])
        try:
            claims = unverified_claims(token)
        except InvalidToken as exc:
            raise ProviderRejected("the token exchange did not return a JWT") from exc
        if claims.get("iss") != self.expected_issuer:
            raise ProviderRejected("the exchanged token's issuer is not the expected issuer")
        expires = float(claims.get("exp", time.time() + float(body.get("expires_in", 300))))
        seconds = expires - self.margin - time.time()
        if seconds > 0:
            self.cache.put(key, token, seconds)
        return token

    def forget(self, principal: Principal) -> None:
        self.cache.entries.pop((principal.family or principal.id_token, principal.subject), None)
