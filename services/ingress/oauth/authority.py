"""Everything the authorization server's endpoints share, built once in the application's lifespan."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis

from services.ingress.oauth.clients import Clients, MetadataFetcher, Registration
from services.ingress.oauth.config import OAuthSettings
from services.ingress.oauth.grants import Grants
from services.ingress.oauth.resource import ResourceGuard, Sso
from shared.identity.oidc import AuthServer, Jwks, discover, trust
from shared.identity.refresh import Refresher
from shared.identity.sealing import Keyring
from shared.identity.server_oauth import ServerOAuth
from shared.identity.store import SealedStore, TokenStore
from shared.valkey import connect


@dataclass
class Authority:
    settings: OAuthSettings
    keyring: Keyring
    valkey: Redis
    http: httpx.AsyncClient
    metadata_http: httpx.AsyncClient  # for client metadata documents: short timeout, never the upstream's CA
    sealed: SealedStore
    tokens: TokenStore
    grants: Grants
    clients: Clients
    upstream: AuthServer
    guard: ResourceGuard
    refresher: Refresher
    servers: ServerOAuth
    # Called after a user logged in to a server of their own (subject, server): the ingress tells that user's
    # sessions that their lists changed.
    on_login: Callable[[str, str], Awaitable[None]] | None = field(default=None)

    @property
    def secure_cookies(self) -> bool:
        return self.settings.issuer.startswith("https://")

    async def close(self) -> None:
        await self.http.aclose()
        await self.metadata_http.aclose()
        await self.valkey.aclose()


async def build(settings: OAuthSettings, valkey: Redis | None = None) -> Authority:
    """Connects, discovers the upstream provider (its metadata and JWKS), and wires the parts together."""
    keyring = Keyring.from_base64(settings.key)
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), verify=trust(settings.oidc_ca_file))
    try:
        meta = await discover(http, settings.oidc_issuer)
    except BaseException:
        await http.aclose()
        raise
    valkey = valkey or connect(settings.valkey_url, max_connections=64, name="muster-oauth")
    metadata_http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.oauth_metadata_timeout), verify=trust(settings.oauth_metadata_ca_file)
    )
    sealed = SealedStore(valkey, keyring)
    upstream = AuthServer(http, meta, settings.oidc_client_id, settings.client_secret)
    tokens = TokenStore(sealed)

    async def end_upstream_login(family_id: str) -> None:
        """A revoked login also ends at the provider: its refresh token there is revoked (RFC 7009)."""
        stored = await tokens.upstream(family_id)
        if stored is not None and stored.refresh_token is not None:
            await upstream.revoke(stored.refresh_token)

    grants = Grants(
        valkey,
        sealed,
        access_seconds=settings.oauth_access_seconds,
        refresh_seconds=settings.oauth_refresh_seconds,
        code_seconds=settings.oauth_code_seconds,
        on_revoke=end_upstream_login,
    )
    token = settings.registration_token.get_secret_value() if settings.registration_token else None
    clients = Clients(
        sealed,
        Registration(
            token=token,
            trusted_uris=frozenset(settings.oauth_trusted_redirect_uris),
            trusted_schemes=frozenset(settings.oauth_trusted_schemes),
            client_seconds=settings.oauth_refresh_seconds * 3,
        ),
        MetadataFetcher(
            metadata_http,
            max_bytes=settings.oauth_metadata_max_bytes,
            timeout=settings.oauth_metadata_timeout,
            allow_private=settings.oauth_metadata_allow_private,
        ),
    )
    sso = None
    if settings.oauth_trusted_audiences and meta.jwks_uri:
        sso = Sso(meta.issuer, settings.oauth_trusted_audiences, Jwks(http, meta.jwks_uri), tokens)
    guard = ResourceGuard(
        grants,
        resources=(settings.resource, settings.issuer, settings.issuer + "/"),
        metadata_url=f"{settings.issuer}/.well-known/oauth-protected-resource/mcp",
        required_scopes=settings.oauth_required_scopes,
        sso=sso,
        cache_seconds=settings.oauth_cache_seconds,
    )
    refresher = Refresher(valkey, sealed, margin=settings.oauth_upstream_refresh_margin)
    servers = ServerOAuth(http, tokens, refresher, public_url=settings.issuer, client_id=settings.oauth_proxy_client_id)
    return Authority(
        settings,
        keyring,
        valkey,
        http,
        metadata_http,
        sealed,
        tokens,
        grants,
        clients,
        upstream,
        guard,
        refresher,
        servers,
    )
