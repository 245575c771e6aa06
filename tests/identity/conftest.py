"""A real muster stack with sign-in on: two ingress replicas (the first is the public URL), two workers,
discovery, oidc-provider as Dex, a second oidc-provider as a remote server's own authorization server, and four
mcp-kubernetes stand-ins, one per downstream mode:

    open       no auth: every user shares it
    sso        forwardToken: accepts the user's Dex ID token (audience muster, or a trusted CLI's)
    exchange   tokenExchange at Dex: accepts only tokens for dex-k8s-authenticator, which the exchange mints
    oauth      per-server OAuth: accepts the remote authorization server's tokens for its own /mcp

Dex's tokens live 16 s and muster refreshes them 6 s before they expire, so that a test can watch a token
expire (a real fault, no clock is mocked) within a bounded wait.
"""

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from muster.stack import free_port
from shared.identity import keys
from shared.identity.sealing import Keyring
from shared.identity.store import SealedStore, Tokens
from tests.conftest import HEADERS, Muster, make_muster, result
from tests.identity.documents import Documents
from tests.oidc import EXCHANGE, K8S_CLIENT, K8S_SECRET, MUSTER_CLIENT, MUSTER_SECRET, OidcProvider, client
from tests.oidc.harness import REGISTRATION_TOKEN, login, new_key, register

TOKEN_SECONDS = 16
MARGIN_SECONDS = 6
PROXY_CLIENT = "muster-proxy"
REDIRECT = "http://127.0.0.1:7777/callback"
# alice may read secrets; everyone else gets the RBAC denial mcp-kubernetes answers with
POLICY = {
    "alice@example.com": [{"verbs": ["get", "list"], "resources": ["secrets"]}],
    "system:authenticated": [{"verbs": ["get", "list", "watch"], "resources": ["pods", "namespaces", "services"]}],
}


@dataclass
class User:
    name: str
    access_token: str
    refresh_token: str

    @property
    def family(self) -> str:
        return self.access_token.split(".", 1)[0]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class World:
    muster: Muster
    dex: OidcProvider
    remote: OidcProvider
    key: str
    documents: Documents
    client_id: str = ""
    users: dict[str, User] = field(default_factory=dict)

    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.muster.ingress_ports[0]}"

    def url(self, n: int = 0) -> str:
        """Replicas 0 (the public URL) and 1 serve the aggregated tools; replica 2 the meta-tools."""
        return self.muster.url(n)

    def sign_in(self, name: str, **extra: str) -> User:
        """`name` signs in through muster (consent, Dex's login page) with a client registered with the token."""
        if not self.client_id:
            self.client_id = register(self.public, REDIRECT).json()["client_id"]
        tokens = login(self.public, self.client_id, REDIRECT, name, None, **extra)
        user = User(name, tokens["access_token"], tokens["refresh_token"])
        if not extra:
            self.users[name] = user
        return user

    def user(self, name: str) -> User:
        return self.users.get(name) or self.sign_in(name)

    async def upstream_tokens(self, user: User) -> Tokens:
        """The user's Dex tokens as muster keeps them (the test knows the encryption key)."""
        valkey = Redis.from_url(self.muster.valkey_url)
        try:
            sealed = SealedStore(valkey, Keyring([base64.b64decode(self.key)]))
            tokens = await sealed.get(keys.upstream(user.family), Tokens)
        finally:
            await valkey.aclose()
        assert tokens is not None
        return tokens

    async def wait_expiring(self, user: User) -> None:
        """Until muster must refresh the user's Dex tokens before it may use them again (at most a token's life)."""
        tokens = await self.upstream_tokens(user)
        with anyio.fail_after(TOKEN_SECONDS + 5):
            while tokens.valid_until - MARGIN_SECONDS > time.time() - 0.2:
                await asyncio.sleep(0.2)

    def refreshes(self) -> int:
        return int(self.dex.stats()["refreshes"])


def _env(world_key: str, dex: OidcProvider, public: str, documents: Documents, secrets: Path) -> dict[str, str]:
    return {
        "MUSTER_AUTH": "oidc",
        "MUSTER_PUBLIC_URL": public,
        "MUSTER_OIDC_ISSUER": dex.issuer,
        "MUSTER_OIDC_CLIENT_ID": MUSTER_CLIENT,
        "MUSTER_OIDC_CLIENT_SECRET": MUSTER_SECRET,
        "MUSTER_REGISTRATION_TOKEN": REGISTRATION_TOKEN,
        "MUSTER_ENCRYPTION_KEY": world_key,
        "MUSTER_OAUTH_UPSTREAM_REFRESH_MARGIN": str(MARGIN_SECONDS),
        "MUSTER_OAUTH_TRUSTED_AUDIENCES": json.dumps([K8S_CLIENT]),
        "MUSTER_OAUTH_TRUSTED_REDIRECT_URIS": json.dumps([REDIRECT]),
        "MUSTER_OAUTH_SCOPES": json.dumps(["mcp", "other"]),
        "MUSTER_OAUTH_REQUIRED_SCOPES": json.dumps(["mcp"]),
        "MUSTER_OAUTH_METADATA_ALLOW_PRIVATE": "true",
        "MUSTER_OAUTH_METADATA_CA_FILE": str(documents.ca_file),
        "MUSTER_OAUTH_PROXY_CLIENT_ID": PROXY_CLIENT,
        "MUSTER_SECRET_REFS_DIR": str(secrets),
    }


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("identity")
    public_port = free_port()
    public = f"http://127.0.0.1:{public_port}"
    documents = Documents(root / "tls", REDIRECT).start()
    dex = OidcProvider(
        [
            client(MUSTER_CLIENT, [f"{public}/oauth/callback"], MUSTER_SECRET),
            client(K8S_CLIENT, ["http://127.0.0.1:1/callback"], K8S_SECRET, grant_types=(EXCHANGE, "refresh_token")),
        ],
        env={"OIDC_ID_TTL": str(TOKEN_SECONDS), "OIDC_ACCESS_TTL": str(TOKEN_SECONDS)},
    ).start()
    remote: OidcProvider | None = None
    try:
        for m in make_muster(root):
            remote = OidcProvider([client(PROXY_CLIENT, [f"{public}/oauth/proxy/callback"])])
            oauth_port = free_port()
            remote.env["OIDC_RESOURCES"] = orjson.dumps({f"http://127.0.0.1:{oauth_port}/mcp": "mcp"}).decode()
            remote.start()
            secrets = root / "secret-refs" / "k8s-authenticator"
            secrets.mkdir(parents=True)
            (secrets / "client-id").write_text(K8S_CLIENT)
            (secrets / "client-secret").write_text(K8S_SECRET)
            policy = root / "policy.json"
            policy.write_text(json.dumps(POLICY))
            key = new_key()
            env = _env(key, dex, public, documents, secrets.parent)
            m.standin("open")
            sso = ("--oidc-issuer", dex.issuer, "--oidc-audience", MUSTER_CLIENT, "--oidc-audience", K8S_CLIENT)
            m.standin("sso", *sso, "--policy", str(policy), auth={"forwardToken": True})
            exchange = {
                "enabled": True,
                "dexTokenEndpoint": f"{dex.issuer}/token",
                "connectorId": "local",
                "clientCredentialsSecretRef": {"name": "k8s-authenticator"},
            }
            m.standin(
                "exchange", "--oidc-issuer", dex.issuer, "--oidc-audience", K8S_CLIENT, auth={"tokenExchange": exchange}
            )
            m.standin("oauth", "--oauth-server", remote.issuer, port=oauth_port, auth={"type": "oauth"})
            m.env.update(env)
            m.discovery()
            m.worker(MUSTER_WORKER_BATCH="1")
            m.worker(MUSTER_WORKER_BATCH="1")
            m.ingress_at(public_port)
            m.ingress()
            m.ingress(MUSTER_EXPOSE="meta")  # the meta-tools with sign-in on
            yield World(m, dex, remote, key, documents)
    finally:
        if remote is not None:
            remote.stop()
        dex.stop()
        documents.stop()


class Agent:
    """An MCP client that speaks plain HTTP (initialize, then requests in its session), with a bearer token."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.headers = dict(HEADERS)
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.AsyncClient(timeout=30)
        self.ids = 0

    async def __aenter__(self) -> "Agent":
        info = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
        response = await self.post("initialize", info)
        assert response.status_code == 200, response.text
        self.headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
        self.headers["MCP-Protocol-Version"] = "2025-11-25"
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def post(self, method: str, params: dict[str, Any] | None = None) -> httpx.Response:
        self.ids += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.ids, "method": method}
        if params is not None:
            body["params"] = params
        return await self.http.post(self.url, headers=self.headers, json=body)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.post(method, params)
        assert response.status_code == 200, response.text
        message: dict[str, Any] = result(response)
        return message

    async def tools(self) -> set[str]:
        return {t["name"] for t in (await self.request("tools/list"))["result"]["tools"]}

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("tools/call", {"name": tool, "arguments": arguments or {}})


def text(message: dict[str, Any]) -> str:
    """The text of a tool call's result (which must be a result, not a JSON-RPC error)."""
    assert "result" in message, message
    value: str = message["result"]["content"][0]["text"]
    return value


PODS = {"resourceType": "pods", "namespace": "giantswarm"}
