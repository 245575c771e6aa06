"""The resource-server check on /mcp: the bearer token in, a Principal or the HTTP answer to send out.

Accepted: muster's own opaque access tokens bound to muster's /mcp resource, and (SSO forwarding, as the Go muster
does) an upstream-provider ID token whose audience is in the trusted list, verified against the provider's JWKS.

A validated token is remembered in-process until the earlier of its expiry and `cache_seconds`, so that the
common case costs a dict lookup and no Valkey round trip; `cache_seconds` is also the longest a revocation
takes to reach this replica.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from services.ingress.oauth.grants import Grants
from shared.identity.errors import IdentityError
from shared.identity.oidc import Jwks
from shared.identity.principal import Principal, sso_family
from shared.identity.store import Tokens, TokenStore


@dataclass(frozen=True, slots=True)
class Denial:
    """The answer to a request that does not get through: 401 or 403, its headers and JSON body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class Sso:
    """Upstream ID tokens accepted on /mcp: this issuer, these audiences, its JWKS. An accepted token is kept
    (sealed) as the upstream tokens of a login of its own, so that workers can forward it or exchange it."""

    issuer: str
    audiences: list[str]
    jwks: Jwks
    tokens: TokenStore | None = None


class ResourceGuard:
    def __init__(
        self,
        grants: Grants,
        *,
        resources: Iterable[str],
        metadata_url: str,
        required_scopes: Iterable[str] = (),
        sso: Sso | None = None,
        cache_seconds: float = 15.0,
        cache_limit: int = 100_000,
    ) -> None:
        self.grants = grants
        self.resources = frozenset(resources)
        self.metadata_url = metadata_url
        self.required = frozenset(required_scopes)
        self.sso = sso
        self.cache_seconds = cache_seconds
        self.cache_limit = cache_limit
        self.cache: dict[str, tuple[Principal, float]] = {}
        self._missing = self._deny(401, None, "")

    async def check(self, headers: Iterable[tuple[bytes, bytes]]) -> Principal | Denial:
        """The request's principal, or the answer to send instead (RFC 6750 §3, RFC 9728 §5.1)."""
        authorization = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
                break
        if authorization is None:
            return self._missing
        if authorization[:7].lower() != b"bearer " or len(authorization) <= 7:
            return self._deny(401, "invalid_request", "the Authorization header is not a bearer token")
        token = authorization[7:].strip().decode("latin-1")
        cached = self.cache.get(token)
        if cached is not None and cached[1] > time.monotonic():
            principal = cached[0]
        else:
            found = await self._validate(token)
            if found is None:
                return self._deny(401, "invalid_token", "the access token is invalid, expired or for another resource")
            principal = found
        if not self.required <= principal.scopes:
            return self._deny(403, "insufficient_scope", "the access token lacks a required scope")
        return principal

    async def _validate(self, token: str) -> Principal | None:
        principal: Principal | None = None
        if token.count(".") == 2:
            if self.sso is not None:
                principal = await self._sso(token)
        else:
            record = await self.grants.access(token)
            if record is not None and record.resource in self.resources:
                principal = Principal(
                    subject=record.subject,
                    client_id=record.client_id,
                    scopes=frozenset(record.scopes),
                    expires_at=record.expires_at,
                    source="muster",
                    family=record.family,
                    email=record.email,
                    groups=tuple(record.groups),
                )
        if principal is not None:
            self._remember(token, principal)
        return principal

    async def _sso(self, token: str) -> Principal | None:
        assert self.sso is not None
        try:
            claims = await self.sso.jwks.verify(token, issuer=self.sso.issuer, audiences=self.sso.audiences)
        except IdentityError:
            return None
        aud = claims.get("aud")
        audience = aud if isinstance(aud, str) else next(a for a in aud or () if a in self.sso.audiences)
        groups = claims.get("groups")
        expires = float(claims["exp"])
        family = sso_family(token)
        if self.sso.tokens is not None and expires > time.time():
            kept = Tokens(
                issuer=self.sso.issuer, access_token=token, expires_at=expires, id_token=token, id_expires_at=expires
            )
            await self.sso.tokens.put_upstream(family, kept, expires - time.time())
        return Principal(
            subject=str(claims["sub"]),
            client_id=audience,
            # an ID token carries no scopes; the caller's login at the trusted client stands for all of muster's
            scopes=self.required,
            expires_at=expires,
            source="sso",
            family=family,
            email=claims.get("email"),
            groups=tuple(groups) if isinstance(groups, list) else (),
            id_token=token,
        )

    def _remember(self, token: str, principal: Principal) -> None:
        seconds = min(self.cache_seconds, principal.expires_at - time.time())
        if seconds <= 0:
            return
        if len(self.cache) >= self.cache_limit:
            now = time.monotonic()
            self.cache = {k: v for k, v in self.cache.items() if v[1] > now}
            while len(self.cache) >= self.cache_limit:
                del self.cache[next(iter(self.cache))]
        self.cache[token] = (principal, time.monotonic() + seconds)

    def forget(self, token: str) -> None:
        self.cache.pop(token, None)

    def _deny(self, status: int, error: str | None, description: str) -> Denial:
        challenge = f'Bearer resource_metadata="{self.metadata_url}"'
        body: dict[str, str] = {}
        if error is not None:
            challenge += f', error="{error}", error_description="{description}"'
            body = {"error": error, "error_description": description}
        if error == "insufficient_scope":
            challenge += f', scope="{" ".join(sorted(self.required))}"'
        if not body:
            body = {"error": "unauthorized", "error_description": "a bearer token is needed"}
        return Denial(
            status,
            [(b"www-authenticate", challenge.encode()), (b"content-type", b"application/json")],
            orjson.dumps(body),
        )
