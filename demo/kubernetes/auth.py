"""Bearer tokens as mcp-kubernetes checks them (reference/mcp-kubernetes.md §3): a JWT signed by a trusted issuer
(its JWKS), with an accepted audience, not expired, with an email (Kubernetes impersonates by it). Off by default.

Two uses: `--oidc-issuer` with `--oidc-audience` is mcp-kubernetes trusting Dex ID tokens forwarded by an
aggregator (SSO forwarding, muster's forwardToken and tokenExchange modes); `--oauth-server` makes the stand-in an
OAuth-protected resource of its own authorization server (muster's per-server OAuth mode): it publishes protected
resource metadata and accepts that server's access tokens for its own /mcp.
"""

from dataclasses import dataclass

import httpx
import orjson

from demo.kubernetes.tools import Identity
from shared.identity.errors import IdentityError
from shared.identity.oidc import Jwks, discover


@dataclass(frozen=True)
class Refusal:
    status: int
    headers: dict[str, str]
    body: bytes


class BearerCheck:
    def __init__(self, issuer: str, audiences: list[str], base_url: str, *, protected: bool) -> None:
        self.issuer = issuer
        self.audiences = audiences
        self.base_url = base_url
        self.protected = protected  # answers for its own authorization server, publishes PRM
        self.http: httpx.AsyncClient | None = None
        self.jwks: Jwks | None = None

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/.well-known/oauth-protected-resource"

    def resource_metadata(self) -> dict[str, object]:
        return {
            "resource": f"{self.base_url}/mcp",
            "authorization_servers": [self.issuer],
            "scopes_supported": ["mcp"],
            "bearer_methods_supported": ["header"],
        }

    async def start(self) -> None:
        self.http = httpx.AsyncClient(timeout=10)
        meta = await discover(self.http, self.issuer)
        assert meta.jwks_uri is not None
        self.jwks = Jwks(self.http, meta.jwks_uri)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()

    async def check(self, authorization: bytes | None) -> Identity | Refusal:
        if authorization is None:
            return self._refuse("Missing Authorization header")
        if authorization[:7].lower() != b"bearer ":
            return self._refuse("Invalid Authorization header format")
        assert self.jwks is not None
        try:
            claims = await self.jwks.verify(
                authorization[7:].strip().decode("latin-1"), issuer=self.issuer, audiences=self.audiences
            )
        except IdentityError:
            return self._refuse("Token validation failed")
        email = claims.get("email")
        if not isinstance(email, str):
            return Refusal(
                401,
                {
                    "WWW-Authenticate": 'Bearer error="invalid_token", error_description="bearer token has no '
                    "'email' claim; impersonation requires an email\""
                },
                b"bearer token has no 'email' claim",
            )
        groups = claims.get("groups")
        extra = tuple(groups) if isinstance(groups, list) else ()
        return Identity(email=email, groups=(*extra, "system:authenticated"), sub=str(claims.get("sub")))

    def _refuse(self, description: str) -> Refusal:
        challenge = (
            f'Bearer resource_metadata="{self.metadata_url}", error="invalid_token", error_description="{description}"'
        )
        body = orjson.dumps({"error": "invalid_token", "error_description": description})
        return Refusal(401, {"WWW-Authenticate": challenge}, body)
