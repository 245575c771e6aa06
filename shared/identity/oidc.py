"""muster as an OAuth client: authorization-server metadata, JWKS, the token endpoint, and ID-token checks.

One `AuthServer` per authorization server muster talks to: the upstream OIDC provider (Dex) that users sign in
at, a remote Dex for token exchange, or a remote MCP server's own authorization server. JOSE is joserfc's.
"""

import base64
import hashlib
import logging
import secrets
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.identity.errors import InvalidToken, ProviderRejected, ProviderUnavailable, ReauthRequired
from shared.identity.store import Tokens

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]
JWKS_REFETCH_SECONDS = 30.0
LEEWAY_SECONDS = (
    5  # clock skew allowed on exp, as mcp-oauth allows  # an unknown key id refetches the JWKS at most this often
)


class Metadata(BaseModel):
    """RFC 8414 / OIDC discovery, the fields muster uses."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    issuer: str
    authorization_endpoint: str | None = None
    token_endpoint: str
    jwks_uri: str | None = None
    revocation_endpoint: str | None = None
    registration_endpoint: str | None = None
    code_challenge_methods_supported: list[str] = []
    authorization_response_iss_parameter_supported: bool = False
    scopes_supported: list[str] | None = None


class Pkce:
    """An RFC 7636 S256 verifier and its challenge."""

    def __init__(self, verifier: str | None = None) -> None:
        self.verifier = verifier or secrets.token_urlsafe(48)
        self.challenge = challenge_of(self.verifier)


def trust(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What an HTTP client to a provider verifies against: the system's CAs, and `ca_file`'s too (an in-cluster
    provider's own CA)."""
    if ca_file is None:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(ca_file))
    return context


def challenge_of(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 path insertion, then OIDC path insertion, then OIDC appended (the order the MCP spec gives)."""
    parts = urlsplit(issuer)
    origin, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    if not path:
        return [f"{origin}/.well-known/oauth-authorization-server", f"{origin}/.well-known/openid-configuration"]
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}/.well-known/openid-configuration{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


async def discover(http: httpx.AsyncClient, issuer: str) -> Metadata:
    """The authorization server's metadata; its `issuer` must be the one asked for (RFC 8414 §3.3)."""
    for url in metadata_urls(issuer):
        try:
            response = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"cannot reach {issuer}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise ProviderUnavailable(f"{issuer} answered {response.status_code} to discovery")
        if response.status_code != 200:
            continue
        try:
            meta = Metadata.model_validate_json(response.content)
        except ValidationError as exc:
            raise ProviderRejected(f"{url} is not authorization server metadata") from exc
        if meta.issuer.rstrip("/") != issuer.rstrip("/"):
            raise ProviderRejected(f"{url} names issuer {meta.issuer!r}, not {issuer!r}")
        return meta
    raise ProviderRejected(f"{issuer} publishes no authorization server metadata")


class Jwks:
    """A JWKS fetched once and again when a token names a key it lacks (at most every 30 s)."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.keys: KeySet | None = None
        self.fetched = 0.0

    async def keyset(self, kid: str | None) -> KeySet:
        stale = self.keys is None or (
            kid is not None and not _has(self.keys, kid) and time.monotonic() - self.fetched > JWKS_REFETCH_SECONDS
        )
        if stale:
            try:
                response = await self.http.get(self.url)
                response.raise_for_status()
                self.keys = KeySet.import_key_set(response.json())
            except httpx.HTTPError as exc:
                if self.keys is None:
                    raise ProviderUnavailable(f"cannot fetch the JWKS at {self.url}") from exc
                logger.warning("cannot refetch the JWKS at %s: %s", self.url, type(exc).__name__)
            self.fetched = time.monotonic()
        assert self.keys is not None
        return self.keys

    async def verify(
        self, token: str, *, issuer: str, audiences: list[str] | None, claims: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The claims of a signed JWT whose issuer, audience (one of `audiences`, when given) and expiry hold."""
        try:
            header = _header(token)
            keys = await self.keyset(header.get("kid"))
            decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
            options: dict[str, Any] = {"iss": {"essential": True, "value": issuer}, "exp": {"essential": True}}
            if audiences is not None:
                options["aud"] = {"essential": True, "values": audiences}
            for name, value in (claims or {}).items():
                options[name] = {"essential": True, "value": value}
            jwt.JWTClaimsRegistry(leeway=LEEWAY_SECONDS, **options).validate(decoded.claims)
        except (JoseError, ValueError, KeyError) as exc:
            raise InvalidToken(f"token rejected: {type(exc).__name__}") from None
        return dict(decoded.claims)


def _has(keys: KeySet, kid: str) -> bool:
    try:
        keys.get_by_kid(kid)
    except ValueError:
        return False
    return True


def _header(token: str) -> dict[str, Any]:
    head = token.split(".", 1)[0]
    value: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return value


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT muster has already verified or that its recipient verifies (to read `exp`, `iss`)."""
    try:
        body = token.split(".")[1]
        claims: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError) as exc:
        raise InvalidToken("not a JWT") from exc
    return claims


class AuthServer:
    """One authorization server as muster's client: confidential when `client_secret` is given, else public."""

    def __init__(
        self, http: httpx.AsyncClient, meta: Metadata, client_id: str, client_secret: str | None = None
    ) -> None:
        self.http = http
        self.meta = meta
        self.client_id = client_id
        self.client_secret = client_secret
        self.jwks = Jwks(http, meta.jwks_uri) if meta.jwks_uri else None

    def _basic(self) -> str:
        """RFC 6749 §2.3.1: client id and secret form-encoded, then Basic."""
        assert self.client_secret is not None
        pair = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def authorization_url(self, **params: str) -> str:
        if self.meta.authorization_endpoint is None:
            raise ProviderRejected(f"{self.meta.issuer} has no authorization endpoint")
        query = {"response_type": "code", "client_id": self.client_id, "code_challenge_method": "S256", **params}
        separator = "&" if "?" in self.meta.authorization_endpoint else "?"
        return self.meta.authorization_endpoint + separator + urlencode(query)

    async def token(self, **form: str) -> dict[str, Any]:
        """A token-endpoint request. invalid_grant is ReauthRequired; 5xx and transport failures are
        ProviderUnavailable (never an auth failure); any other refusal is ProviderRejected."""
        headers = {"Accept": "application/json"}
        if self.client_secret is not None:
            headers["Authorization"] = self._basic()
        else:
            form = {"client_id": self.client_id, **form}
        try:
            response = await self.http.post(self.meta.token_endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"cannot reach the token endpoint of {self.meta.issuer}") from exc
        if response.status_code >= 500:
            raise ProviderUnavailable(f"{self.meta.issuer} answered {response.status_code}")
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise ProviderUnavailable(f"{self.meta.issuer} answered something that is not JSON") from exc
        if response.status_code == 200 and "access_token" in body:
            return body
        error = str(body.get("error", response.status_code))
        if error == "invalid_grant":
            raise ReauthRequired(f"{self.meta.issuer} refused the grant; sign in again")
        raise ProviderRejected(f"{self.meta.issuer} refused the token request: {error}")

    def tokens(self, body: dict[str, Any], previous: Tokens | None = None, resource: str | None = None) -> Tokens:
        """A token response as stored tokens; a refresh response without a new refresh token keeps the old one."""
        now = time.time()
        id_token = body.get("id_token")
        return Tokens(
            issuer=self.meta.issuer,
            access_token=body["access_token"],
            expires_at=now + float(body.get("expires_in", 3600)),
            refresh_token=body.get("refresh_token") or (previous.refresh_token if previous else None),
            id_token=id_token,
            id_expires_at=float(unverified_claims(id_token)["exp"]) if id_token else None,
            scope=body.get("scope"),
            token_endpoint=self.meta.token_endpoint,
            resource=resource,
            obtained_at=now,
        )

    async def refresh(self, tokens: Tokens) -> Tokens:
        if tokens.refresh_token is None:
            raise ReauthRequired(f"no refresh token for {self.meta.issuer}; sign in again")
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        if tokens.resource:
            form["resource"] = tokens.resource
        return self.tokens(await self.token(**form), tokens, tokens.resource)

    async def verify_id_token(
        self, token: str, nonce: str | None = None, audience: str | None = None
    ) -> dict[str, Any]:
        if self.jwks is None:
            raise ProviderRejected(f"{self.meta.issuer} publishes no JWKS")
        extra = {"nonce": nonce} if nonce is not None else None
        return await self.jwks.verify(
            token, issuer=self.meta.issuer, audiences=[audience or self.client_id], claims=extra
        )

    async def revoke(self, token: str, hint: str = "refresh_token") -> None:
        """Best effort (RFC 7009): a provider that cannot be told is logged, not raised."""
        if self.meta.revocation_endpoint is None:
            return
        form = {"token": token, "token_type_hint": hint}
        headers = {}
        if self.client_secret is not None:
            headers["Authorization"] = self._basic()
        else:
            form["client_id"] = self.client_id
        try:
            await self.http.post(self.meta.revocation_endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("cannot revoke a token at %s: %s", self.meta.issuer, type(exc).__name__)
