"""Per-server OAuth: muster as the OAuth client of a remote MCP server's own authorization server, as each user.

Discovery follows the MCP spec: the 401's `resource_metadata`, else the well-known protected-resource documents,
then the authorization server's metadata (RFC 8414, then OIDC). muster's client id is its client ID metadata
document (`/.well-known/oauth-client.json`) unless a pre-registered client is configured. The browser goes through
`/oauth/proxy/start` (which redirects to the remote authorization server with PKCE S256 and RFC 8707 `resource`)
and comes back to `/oauth/proxy/callback`, where the code is exchanged (with `resource` again), `iss` checked
(RFC 9207), and the tokens stored sealed per (user, server).
"""

import re
import secrets
import time
from urllib.parse import urlencode, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.identity import keys
from shared.identity.cache import Expiring
from shared.identity.errors import LoginRequired, ProviderRejected, ProviderUnavailable, ReauthRequired
from shared.identity.oidc import AuthServer, Metadata, Pkce, discover
from shared.identity.principal import Principal
from shared.identity.refresh import Refresher
from shared.identity.store import Tokens, TokenStore

RESOURCE_METADATA = re.compile(r'resource_metadata="([^"]+)"')
SCOPE = re.compile(r'scope="([^"]+)"')
DISCOVERY_SECONDS = 1800.0


class ProtectedResource(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    resource: str
    authorization_servers: list[str] = []
    scopes_supported: list[str] | None = None


class Remote(BaseModel):
    """What discovery found for one remote server."""

    model_config = ConfigDict(frozen=True)

    resource: str
    metadata: Metadata
    scopes: str | None


class PendingLogin(BaseModel):
    """A per-server login in progress, stored sealed under its state nonce for ten minutes, taken once."""

    subject: str
    server: str
    verifier: str
    resource: str
    metadata: Metadata
    scopes: str | None


class ServerOAuth:
    """Logins to remote servers' authorization servers, and the tokens that result, for every user."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        store: TokenStore,
        refresher: Refresher,
        *,
        public_url: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        state_seconds: float = 600.0,
        keep_seconds: float = 30 * 86400,
    ) -> None:
        self.http = http
        self.store = store
        self.refresher = refresher
        self.public_url = public_url.rstrip("/")
        self.client_id = client_id or f"{self.public_url}/.well-known/oauth-client.json"
        self.client_secret = client_secret
        self.state_seconds = state_seconds
        self.keep_seconds = keep_seconds
        self.redirect_uri = f"{self.public_url}/oauth/proxy/callback"
        self.remotes: dict[str, tuple[Remote, float]] = {}
        self.cache = Expiring()
        self.rejected = Expiring()  # per (user, server): the access token the server refused

    def client_metadata(self) -> dict[str, object]:
        """muster's client ID metadata document, served at /.well-known/oauth-client.json."""
        return {
            "client_id": self.client_id,
            "client_name": "Muster MCP Aggregator",
            "redirect_uris": [self.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none" if self.client_secret is None else "client_secret_basic",
            "software_id": "giantswarm-muster",
        }

    async def discover(self, server_url: str, www_authenticate: str | None = None) -> Remote:
        cached = self.remotes.get(server_url)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        prm = await self._protected_resource(server_url, www_authenticate)
        if not prm.authorization_servers:
            raise ProviderRejected(f"{server_url} names no authorization server")
        metadata = await discover(self.http, prm.authorization_servers[0])
        if "S256" not in metadata.code_challenge_methods_supported:
            raise ProviderRejected(f"{metadata.issuer} does not support PKCE S256")
        # The MCP spec's order: the challenge's scope, else what the resource says it supports, else none.
        challenged = SCOPE.search(www_authenticate or "")
        scopes = challenged.group(1) if challenged else " ".join(prm.scopes_supported or ()) or None
        remote = Remote(resource=prm.resource, metadata=metadata, scopes=scopes)
        self.remotes[server_url] = (remote, time.monotonic() + DISCOVERY_SECONDS)
        return remote

    async def _protected_resource(self, server_url: str, www_authenticate: str | None) -> ProtectedResource:
        parts = urlsplit(server_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        candidates = []
        found = RESOURCE_METADATA.search(www_authenticate or "")
        if found:
            candidates.append(found.group(1))
        path = parts.path.rstrip("/")
        if path:
            candidates.append(f"{origin}/.well-known/oauth-protected-resource{path}")
        candidates.append(f"{origin}/.well-known/oauth-protected-resource")
        for url in candidates:
            try:
                response = await self.http.get(url, headers={"Accept": "application/json"})
            except httpx.HTTPError as exc:
                raise ProviderUnavailable(f"cannot reach {url}") from exc
            if response.status_code != 200:
                continue
            try:
                prm = ProtectedResource.model_validate_json(response.content)
            except ValidationError as exc:
                raise ProviderRejected(f"{url} is not protected resource metadata") from exc
            # RFC 9728 §3.3: the document must be about this server, not another one.
            if not server_url.startswith(prm.resource.rstrip("/")):
                raise ProviderRejected(f"{url} describes {prm.resource}, not {server_url}")
            return prm
        raise ProviderRejected(f"{server_url} publishes no protected resource metadata")

    async def login_url(self, subject: str, server: str, server_url: str, www_authenticate: str | None = None) -> str:
        """Prepares a login of `subject` to `server`; returns the URL the user opens (muster's /oauth/proxy/start)."""
        remote = await self.discover(server_url, www_authenticate)
        nonce = secrets.token_urlsafe(32)
        pending = PendingLogin(
            subject=subject,
            server=server,
            verifier=Pkce().verifier,
            resource=remote.resource,
            metadata=remote.metadata,
            scopes=remote.scopes,
        )
        await self.store.put_state(nonce, pending, self.state_seconds)
        return f"{self.public_url}/oauth/proxy/start?{urlencode({'state': nonce})}"

    async def start(self, nonce: str) -> str:
        """The remote authorization server's URL for a prepared login (the state stays until the callback)."""
        pending = await self.store.peek_state(nonce, PendingLogin)
        if pending is None:
            raise ReauthRequired("this login link has expired or was used; ask for a new one")
        params = {
            "redirect_uri": self.redirect_uri,
            "state": nonce,
            "code_challenge": Pkce(pending.verifier).challenge,
            "resource": pending.resource,
        }
        if pending.scopes:
            params["scope"] = pending.scopes
        return self._server(pending.metadata).authorization_url(**params)

    async def finish(self, nonce: str, code: str, iss: str | None) -> PendingLogin:
        """The callback: takes the state once, checks `iss`, exchanges the code, stores the tokens."""
        pending = await self.store.take_state(nonce, PendingLogin)
        if pending is None:
            raise ReauthRequired("this login has expired or was already completed")
        meta = pending.metadata
        if (iss is None and meta.authorization_response_iss_parameter_supported) or (
            iss is not None and iss != meta.issuer
        ):
            raise ProviderRejected("the authorization response came from another issuer (RFC 9207)")
        server = self._server(meta)
        body = await server.token(
            grant_type="authorization_code",
            code=code,
            redirect_uri=self.redirect_uri,
            code_verifier=pending.verifier,
            resource=pending.resource,
        )
        tokens = server.tokens(body, resource=pending.resource)
        await self.store.put_server(pending.subject, pending.server, tokens, self.keep_seconds)
        self.cache.entries.pop((pending.subject, pending.server), None)
        return pending

    def _server(self, meta: Metadata) -> AuthServer:
        return AuthServer(self.http, meta, self.client_id, self.client_secret)

    async def authorization(self, principal: Principal, server: str, server_url: str) -> str:
        """The user's bearer for `server`; LoginRequired (with the URL to open) when they have not logged in."""
        key = (principal.subject, server)
        token = self.cache.get(key)
        if token is not None:
            return "Bearer " + token
        async with self.cache.lock(key):
            token = self.cache.get(key)
            if token is None:
                token = await self._fresh(principal.subject, server, server_url)
        return "Bearer " + token

    async def _fresh(self, subject: str, server: str, server_url: str) -> str:
        rejected = self.rejected.get((subject, server))
        try:
            tokens = await self.refresher.fresh(
                keys.server_token(subject, server), self._renew, lambda _: self.keep_seconds, rejected
            )
        except ReauthRequired:
            url = await self.login_url(subject, server, server_url)
            raise LoginRequired(f"log in to {server} first: open {url}", url) from None
        self.rejected.entries.pop((subject, server), None)
        seconds = tokens.refresh_at(self.refresher.margin) - time.time()
        if seconds > 0:
            self.cache.put((subject, server), tokens.access_token, seconds)
        return tokens.access_token

    async def _renew(self, tokens: Tokens) -> Tokens:
        meta = Metadata(issuer=tokens.issuer, token_endpoint=tokens.token_endpoint or "")
        return await self._server(meta).refresh(tokens)

    def reject(self, subject: str, server: str, token: str) -> None:
        """The server refused this token: the next call refreshes it once, or asks the user to log in again."""
        self.cache.entries.pop((subject, server), None)
        self.rejected.put((subject, server), token, 600)


class ServerCredential:
    """The per-server OAuth mode as a Credential for one server."""

    def __init__(self, oauth: ServerOAuth, server: str, url: str) -> None:
        self.oauth = oauth
        self.server = server
        self.url = url

    async def authorization(self, principal: Principal) -> str:
        return await self.oauth.authorization(principal, self.server, self.url)

    def reject(self, principal: Principal, authorization: str) -> None:
        self.oauth.reject(principal.subject, self.server, authorization.removeprefix("Bearer "))
