"""The worker's side of identity: for each call, the Authorization its server's `spec.auth` asks for, on behalf of
the call's user (shared/identity/modes.py names the modes), and what to answer when there is none that works.

The credentials are shared/identity's: each answers from an in-process cache in the common case (a dict lookup),
refreshes or exchanges before expiry, single-flight across every worker. A server's 401 is `reject`ed: the next
attempt refreshes once; a second 401 is the caller's AuthRequired, never a retry loop.
"""

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import httpx
from redis.asyncio import Redis

from services.worker.config import WorkerIdentitySettings
from shared import errors
from shared.identity.credentials import Credential, ForwardToken, TokenExchange, UserTokens
from shared.identity.errors import (
    IdentityError,
    LoginRequired,
    ProviderRejected,
    ProviderUnavailable,
    ReauthRequired,
)
from shared.identity.modes import Mode, mode_of
from shared.identity.oidc import AuthServer, discover, trust
from shared.identity.principal import Principal
from shared.identity.refresh import Refresher
from shared.identity.sealing import Keyring
from shared.identity.server_oauth import ServerCredential, ServerOAuth
from shared.identity.store import SealedStore, TokenStore
from shared.mcpserver import TokenExchange as ExchangeSpec
from shared.messages import Call, ServerRecord
from shared.valkey import connect

logger = logging.getLogger(__name__)

RETRY_AFTER = 5.0
_SERVER: ContextVar[str] = ContextVar("server", default="")
# Told each token refresh and exchange at a provider: (kind "refresh" | "exchange", server, outcome).
OnToken = Callable[[str, str, str], None]


def principal_of(call: Call) -> Principal:
    return Principal.of_call(call.principal.decode(), call.login.decode() or None)


def refusal(server: str, exc: IdentityError) -> bytes:
    """The caller's error for a credential muster could not get: sign in (again), retry later, or an operator's
    problem. Never the token, only what to do."""
    if isinstance(exc, LoginRequired):
        return errors.AuthRequired(f"{server} needs you to log in to it first: open {exc.url}", server, exc.url).body()
    if isinstance(exc, ReauthRequired):
        return errors.AuthRequired(f"{server}: {exc}; sign in to muster again", server).body()
    if isinstance(exc, ProviderUnavailable):
        return errors.UpstreamUnavailable(f"{server}: the identity provider: {exc}", RETRY_AFTER).body()
    return errors.InternalError(f"muster cannot get a credential for {server}: {exc}; an operator must look").body()


@dataclass(frozen=True)
class Exchange:
    """One server's tokenExchange settings, and the credential built from them."""

    spec: ExchangeSpec
    audiences: tuple[str, ...]
    credential: TokenExchange


class Identity:
    def __init__(self, settings: WorkerIdentitySettings, valkey: Redis, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.valkey = valkey
        self.http = http
        sealed = SealedStore(valkey, Keyring.from_base64(settings.key))
        self.refresher = Refresher(valkey, sealed, margin=settings.oauth_upstream_refresh_margin)
        self.refresher.observe = lambda outcome: self.on_token("refresh", _SERVER.get(), outcome)
        self.servers = ServerOAuth(
            http,
            TokenStore(sealed),
            self.refresher,
            public_url=settings.issuer,
            client_id=settings.oauth_proxy_client_id,
        )
        self.exchanges: dict[str, Exchange] = {}
        self.on_token: OnToken = lambda kind, server, outcome: None
        self._user_tokens: UserTokens | None = None
        self._discovering = asyncio.Lock()

    @classmethod
    def build(cls, settings: WorkerIdentitySettings) -> "Identity":
        valkey = connect(settings.valkey_url, max_connections=32, name="muster-worker-identity")
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), verify=trust(settings.oidc_ca_file))
        return cls(settings, valkey, http)

    async def close(self) -> None:
        await self.http.aclose()
        await self.valkey.aclose()

    async def authorization(self, record: ServerRecord, call: Call) -> bytes | None:
        """The Authorization value for this call, or None for a server without a user credential."""
        mode = mode_of(record)
        if mode == "none":
            return None
        if not call.login:
            raise ReauthRequired(
                f"{record.name} is called with each user's own credential, and muster runs without sign-in"
            )
        _SERVER.set(record.name)
        credential = await self._credential(record, mode)
        return (await credential.authorization(principal_of(call))).encode()

    def reject(self, record: ServerRecord, call: Call, value: bytes) -> None:
        """The server answered this value with 401: the next attempt gets a refreshed (or new) credential."""
        mode = mode_of(record)
        if mode == "forward" and self._user_tokens is not None:
            ForwardToken(self._user_tokens).reject(principal_of(call), value.decode())
        elif mode == "exchange" and record.name in self.exchanges:
            self.exchanges[record.name].credential.reject(principal_of(call), value.decode())
        elif mode == "oauth":
            ServerCredential(self.servers, record.name, record.url).reject(principal_of(call), value.decode())

    def login_changed(self, subject: str, server: str) -> None:
        """The user logged in to the server again, or out of it: what this worker kept of the old token goes."""
        self.servers.cache.entries.pop((subject, server), None)

    async def refused(self, record: ServerRecord, call: Call) -> bytes:
        """The answer to a call whose server refused a refreshed credential too."""
        if mode_of(record) == "oauth":
            subject = call.principal.decode()
            await self.servers.store.drop_server(subject, record.name)
            self.servers.cache.entries.pop((subject, record.name), None)
            try:
                url = await self.servers.login_url(subject, record.name, record.url)
            except IdentityError as exc:
                return refusal(record.name, exc)
            return refusal(record.name, LoginRequired(f"log in to {record.name} again", url))
        if mode_of(record) == "none":
            return errors.AuthRequired(
                f"{record.name} asks for a login, and its MCPServer names no spec.auth for muster to log in with",
                record.name,
            ).body()
        return refusal(record.name, ReauthRequired(f"{record.name} refused your credential after a refresh"))

    async def _credential(self, record: ServerRecord, mode: Mode) -> Credential:
        if mode == "oauth":
            return ServerCredential(self.servers, record.name, record.url)
        tokens = await self.user_tokens()
        if mode == "forward":
            return ForwardToken(tokens)
        return self._exchange(record, tokens)

    async def user_tokens(self) -> UserTokens:
        """The users' upstream tokens; the provider's metadata is discovered on first use (a provider down when
        the worker starts is a retry-later for the calls that need it, not a worker that cannot start)."""
        if self._user_tokens is None:
            async with self._discovering:
                if self._user_tokens is None:
                    meta = await discover(self.http, self.settings.oidc_issuer)
                    upstream = AuthServer(self.http, meta, self.settings.oidc_client_id, self.settings.client_secret)
                    self._user_tokens = UserTokens(upstream, self.refresher)
        return self._user_tokens

    def _exchange(self, record: ServerRecord, tokens: UserTokens) -> TokenExchange:
        assert record.auth is not None and record.auth.token_exchange is not None  # mode_of said exchange
        spec, audiences = record.auth.token_exchange, tuple(record.auth.required_audiences)
        known = self.exchanges.get(record.name)
        if known is not None and (known.spec, known.audiences) == (spec, audiences):
            return known.credential
        assert spec.dex_token_endpoint is not None and spec.connector_id is not None
        client_id, secret = self._exchange_client(spec)
        scopes = " ".join([spec.scopes, *(f"audience:server:client_id:{a}" for a in audiences)])
        credential = TokenExchange(
            self.http,
            tokens,
            endpoint=spec.dex_token_endpoint,
            connector_id=spec.connector_id,
            expected_issuer=spec.expected_issuer,
            client_id=client_id,
            client_secret=secret,
            scopes=scopes,
            margin=self.settings.oauth_upstream_refresh_margin,
        )
        credential.observe = lambda outcome: self.on_token("exchange", record.name, outcome)
        self.exchanges[record.name] = Exchange(spec, audiences, credential)
        return credential

    def _exchange_client(self, spec: ExchangeSpec) -> tuple[str, str | None]:
        """The client muster exchanges as at the remote Dex: the secret the MCPServer names, mounted as files;
        without one, muster's own client id as a public client."""
        ref = spec.client_credentials_secret_ref
        if ref is None:
            return self.settings.oidc_client_id, None
        folder = self.settings.secret_refs_dir / ref.name
        try:
            client_id = (folder / ref.client_id_key).read_text().strip()
            secret = (folder / ref.client_secret_key).read_text().strip()
        except OSError as exc:
            raise ProviderRejected(f"the secret {ref.name} is not mounted in {folder}") from exc
        return client_id, secret
