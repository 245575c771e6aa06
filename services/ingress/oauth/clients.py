"""The clients muster knows: registered ones (RFC 7591, behind the registration token or a trusted redirect URI)
and client ID metadata documents (the 2026-07-28 spec's preferred way), fetched with an SSRF guard."""

import asyncio
import hmac
import ipaddress
import re
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import BaseModel

from services.ingress.oauth.errors import OAuthError
from shared.identity import keys
from shared.identity.store import SealedStore

AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
GRANTS = {"authorization_code", "refresh_token"}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
MAX_REDIRECT_URIS = 10
CACHE_SECONDS = (60, 86400, 300)  # min, max, default for a metadata document without Cache-Control


class Client(BaseModel):
    client_id: str
    redirect_uris: list[str]
    client_name: str | None = None
    token_endpoint_auth_method: str = "none"
    secret_digest: str | None = None
    scope: str | None = None
    metadata_document: bool = False

    def redirect_allowed(self, uri: str) -> bool:
        """Exact match; for loopback http redirect URIs any port (RFC 8252 §7.3)."""
        if uri in self.redirect_uris:
            return True
        wanted = urlsplit(uri)
        if wanted.scheme != "http" or wanted.hostname not in LOOPBACK:
            return False
        for registered in map(urlsplit, self.redirect_uris):
            if (registered.scheme, registered.hostname, registered.path, registered.query) == (
                wanted.scheme,
                wanted.hostname,
                wanted.path,
                wanted.query,
            ):
                return True
        return False

    def secret_matches(self, secret: str) -> bool:
        if self.secret_digest is None:
            return False
        return hmac.compare_digest(self.secret_digest, keys.digest(secret))


def metadata_error(description: str) -> OAuthError:
    return OAuthError("invalid_client_metadata", description)


def check_redirect_uri(uri: object) -> str:
    if not isinstance(uri, str) or not uri:
        raise OAuthError("invalid_redirect_uri", "a redirect URI must be a non-empty string")
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*", parts.scheme):
        raise OAuthError("invalid_redirect_uri", "a redirect URI must be absolute and have no fragment")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise OAuthError("invalid_redirect_uri", "http redirect URIs are allowed for loopback addresses only")
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise OAuthError("invalid_redirect_uri", "a web redirect URI needs a host")
    if parts.scheme.lower() in ("javascript", "data", "file", "vbscript"):
        raise OAuthError("invalid_redirect_uri", "this scheme is not a redirect URI")
    return uri


def _metadata(body: bytes) -> dict[str, Any]:
    try:
        meta = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise metadata_error("the body is not JSON") from None
    if not isinstance(meta, dict):
        raise metadata_error("the body is not a JSON object")
    return meta


def _redirect_uris(meta: dict[str, Any]) -> list[str]:
    uris = meta.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > MAX_REDIRECT_URIS:
        raise OAuthError("invalid_redirect_uri", f"redirect_uris must list 1 to {MAX_REDIRECT_URIS} URIs")
    return [check_redirect_uri(u) for u in uris]


def _declared(meta: dict[str, Any]) -> tuple[str, list[str], str | None]:
    """The token endpoint auth method, grant types and client name the metadata declares, each checked."""
    method = meta.get("token_endpoint_auth_method", "none")
    if method not in AUTH_METHODS:
        raise metadata_error(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
    grants = meta.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or not set(grants) <= GRANTS:
        raise metadata_error("grant_types may be authorization_code and refresh_token")
    if meta.get("response_types", ["code"]) != ["code"]:
        raise metadata_error('response_types must be ["code"]')
    name = meta.get("client_name")
    if name is not None and not isinstance(name, str):
        raise metadata_error("client_name must be a string")
    return method, grants, name


@dataclass
class Registration:
    token: str | None
    trusted_uris: frozenset[str]
    trusted_schemes: frozenset[str]
    client_seconds: int

    def trusted(self, uris: list[str]) -> bool:
        return all(u in self.trusted_uris or urlsplit(u).scheme in self.trusted_schemes for u in uris)


class Clients:
    def __init__(self, sealed: SealedStore, registration: Registration, fetcher: "MetadataFetcher") -> None:
        self.sealed = sealed
        self.registration = registration
        self.fetcher = fetcher

    async def register(self, body: bytes, bearer: str | None) -> dict[str, Any]:
        """RFC 7591 §3: the client's metadata in, its client_id (and secret, for a confidential client) out."""
        meta = _metadata(body)
        uris = _redirect_uris(meta)
        token = self.registration.token
        allowed = bearer is not None and token is not None and hmac.compare_digest(bearer, token)
        if not allowed and not self.registration.trusted(uris):
            raise OAuthError("invalid_token", "registration needs the registration token", 401)
        method, grants, name = _declared(meta)
        secret = secrets.token_urlsafe(32) if method != "none" else None
        client = Client(
            client_id=secrets.token_urlsafe(16),
            redirect_uris=uris,
            client_name=name,
            token_endpoint_auth_method=method,
            secret_digest=keys.digest(secret) if secret else None,
            scope=meta.get("scope") if isinstance(meta.get("scope"), str) else None,
        )
        await self.sealed.put(keys.client(client.client_id), client, self.registration.client_seconds)
        answer: dict[str, Any] = {
            "client_id": client.client_id,
            "client_id_issued_at": int(time.time()),
            "redirect_uris": uris,
            "token_endpoint_auth_method": method,
            "grant_types": grants,
            "response_types": ["code"],
        }
        if name is not None:
            answer["client_name"] = name
        if secret is not None:
            answer["client_secret"] = secret
            answer["client_secret_expires_at"] = 0
        return answer

    async def get(self, client_id: str) -> Client | None:
        """A registered client, or the client a metadata document URL names (fetched, checked, cached)."""
        if client_id.startswith(("https://", "http://")):
            return await self.fetcher.client(client_id)
        return await self.sealed.get(keys.client(client_id), Client)


class MetadataFetcher:
    """Client ID metadata documents: https only, no private, loopback or link-local address (checked on the
    connected socket, so DNS rebinding does not get around it), at most `max_bytes`, within `timeout` seconds,
    no redirects, cached per its Cache-Control within [1 min, 1 day]."""

    def __init__(self, http: httpx.AsyncClient, *, max_bytes: int, timeout: float, allow_private: bool) -> None:
        self.http = http
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.allow_private = allow_private
        self.cache: dict[str, tuple[Client, float]] = {}

    async def client(self, url: str) -> Client:
        cached = self.cache.get(url)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        self._check_url(url)
        try:
            async with asyncio.timeout(self.timeout):
                body, seconds = await self._fetch(url)
        except TimeoutError:
            raise OAuthError("invalid_client", "the client metadata document did not arrive in time") from None
        except httpx.HTTPError:
            raise OAuthError("invalid_client", "the client metadata document cannot be fetched") from None
        client = self._parse(url, body)
        if len(self.cache) > 10_000:
            self.cache.clear()
        self.cache[url] = (client, time.monotonic() + seconds)
        return client

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        secure = parts.scheme == "https" or (self.allow_private and parts.scheme == "http")
        if not secure or not parts.hostname or parts.username or parts.password or parts.fragment:
            raise OAuthError("invalid_client", "a client ID URL must be https, with a host and no credentials")
        if parts.path in ("", "/"):
            raise OAuthError("invalid_client", "a client ID URL must have a path")
        if parts.hostname and not self.allow_private:
            try:
                address = ipaddress.ip_address(parts.hostname.strip("[]"))
            except ValueError:
                return
            if not address.is_global:
                raise OAuthError("invalid_client", "the client ID URL points at a private address")

    def _refuse(self, host: str) -> bool:
        if self.allow_private:
            return False
        return not ipaddress.ip_address(host.split("%")[0]).is_global

    async def _fetch(self, url: str) -> tuple[bytes, float]:
        host = urlsplit(url).hostname or ""
        port = urlsplit(url).port or 443
        if not self.allow_private:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            if not infos or any(self._refuse(str(info[4][0])) for info in infos):
                raise OAuthError("invalid_client", "the client ID URL points at a private address")
        async with self.http.stream(
            "GET", url, headers={"Accept": "application/json"}, follow_redirects=False
        ) as response:
            stream = response.extensions.get("network_stream")
            peer = stream.get_extra_info("server_addr") if stream is not None else None
            if peer is not None and self._refuse(str(peer[0])):
                raise OAuthError("invalid_client", "the client ID URL points at a private address")
            if response.status_code != 200:
                raise OAuthError("invalid_client", f"the client metadata document answered {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise OAuthError("invalid_client", "the client metadata document is too large")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise OAuthError("invalid_client", "the client metadata document is too large")
                chunks.append(chunk)
            return b"".join(chunks), _max_age(response.headers.get("cache-control"))

    def _parse(self, url: str, body: bytes) -> Client:
        try:
            meta = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise OAuthError("invalid_client", "the client metadata document is not JSON") from None
        if not isinstance(meta, dict) or meta.get("client_id") != url:
            raise OAuthError("invalid_client", "the client metadata document must name its own URL as client_id")
        if meta.get("token_endpoint_auth_method", "none") != "none" or "client_secret" in meta:
            raise OAuthError("invalid_client", "a client metadata document client is a public client")
        uris = meta.get("redirect_uris")
        if not isinstance(uris, list) or not uris or len(uris) > MAX_REDIRECT_URIS:
            raise OAuthError("invalid_client", "the client metadata document lists no usable redirect_uris")
        try:
            uris = [check_redirect_uri(u) for u in uris]
        except OAuthError as exc:
            raise OAuthError("invalid_client", exc.description) from None
        name = meta.get("client_name")
        return Client(
            client_id=url,
            redirect_uris=uris,
            client_name=name if isinstance(name, str) else None,
            metadata_document=True,
        )


def _max_age(header: str | None) -> float:
    low, high, default = CACHE_SECONDS
    found = re.search(r"max-age=(\d+)", header or "")
    if header and "no-store" in header:
        return low
    return float(min(high, max(low, int(found.group(1))))) if found else float(default)
