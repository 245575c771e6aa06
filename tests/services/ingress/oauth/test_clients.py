"""Client identification: client ID metadata documents (fetched with an SSRF guard, size and time limits) and
registration of clients whose redirect URIs are trusted."""

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from muster.stack import free_port
from services.ingress.oauth.clients import MetadataFetcher
from services.ingress.oauth.errors import OAuthError
from shared.identity.oidc import Pkce
from tests.oidc import OidcProvider
from tests.oidc.harness import login, provider_for, register, serve, settings_for, start_valkey

pytestmark = pytest.mark.slow  # runs oidc-provider
REDIRECT = "http://127.0.0.1:7777/callback"
TRUSTED = "http://127.0.0.1:8888/trusted-callback"


class Documents(BaseHTTPRequestHandler):
    """Serves client metadata documents: a good one, an oversize one, one naming another client, a slow one."""

    def do_GET(self) -> None:
        assert isinstance(self.server, ThreadingHTTPServer)
        base = f"http://127.0.0.1:{self.server.server_port}"
        docs = {
            "/client.json": {"client_id": f"{base}/client.json", "client_name": "CIMD", "redirect_uris": [REDIRECT]},
            "/big.json": {"client_id": f"{base}/big.json", "redirect_uris": [REDIRECT], "pad": "x" * 20_000},
            "/other.json": {"client_id": f"{base}/client.json", "redirect_uris": [REDIRECT]},
            "/secret.json": {
                "client_id": f"{base}/secret.json",
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            "/slow.json": {"client_id": f"{base}/slow.json", "redirect_uris": [REDIRECT]},
        }
        if self.path == "/slow.json":
            threading.Event().wait(3)
        body = json.dumps(docs.get(self.path, {})).encode()
        self.send_response(200 if self.path in docs else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class World:
    base: str
    docs: str
    provider: OidcProvider


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    stack, valkey_url = start_valkey(tmp_path_factory.mktemp("valkey"))
    documents = ThreadingHTTPServer(("127.0.0.1", 0), Documents)
    documents.daemon_threads = True
    threading.Thread(target=documents.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{free_port()}"
    provider = provider_for(base)
    settings = settings_for(
        base,
        provider.issuer,
        valkey_url,
        oauth_metadata_allow_private=True,
        oauth_metadata_timeout=1.0,
        oauth_trusted_redirect_uris=[TRUSTED],
    )
    try:
        with serve(settings):
            yield World(base, f"http://127.0.0.1:{documents.server_address[1]}", provider)
    finally:
        documents.shutdown()
        documents.server_close()
        provider.stop()
        stack.stop()


def authorize(world: World, client_id: str) -> httpx.Response:
    return httpx.get(
        f"{world.base}/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "code_challenge": Pkce().challenge,
            "code_challenge_method": "S256",
        },
        timeout=10,
    )


def test_a_client_identified_by_its_metadata_document_signs_a_user_in(world: World) -> None:
    client_id = f"{world.docs}/client.json"
    tokens = login(world.base, client_id, REDIRECT, "pat")
    me = httpx.get(f"{world.base}/whoami", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json()["subject"] == "pat"


@pytest.mark.parametrize(
    ("path", "description"),
    [
        ("/big.json", "too large"),
        ("/other.json", "its own URL"),
        ("/secret.json", "public client"),
        ("/missing.json", "answered 404"),
        ("/slow.json", "in time"),
    ],
)
def test_a_bad_metadata_document_is_invalid_client_and_never_a_redirect(
    world: World, path: str, description: str
) -> None:
    response = authorize(world, f"{world.docs}{path}")
    assert response.status_code == 400 and "location" not in response.headers
    assert response.json()["error"] == "invalid_client"
    assert description in response.json()["error_description"]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/client.json",
        "https://localhost/client.json",
        "https://[::1]/client.json",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/client.json",
        "http://example.com/client.json",
        "https://example.com/",
        "https://user:pw@example.com/client.json",
    ],
)
def test_a_metadata_url_at_a_private_address_or_not_https_is_refused_without_a_request(url: str) -> None:
    async def fetch() -> None:
        async with httpx.AsyncClient() as http:
            fetcher = MetadataFetcher(http, max_bytes=5120, timeout=1.0, allow_private=False)
            await fetcher.client(url)

    with pytest.raises(OAuthError) as info:
        asyncio.run(fetch())
    assert info.value.error == "invalid_client"


def test_a_client_whose_redirect_uris_are_trusted_registers_without_the_token(world: World) -> None:
    response = register(world.base, TRUSTED, token=None)
    assert response.status_code == 201
    assert "client_secret" not in response.json()
    mixed = httpx.post(f"{world.base}/oauth/register", json={"redirect_uris": [TRUSTED, REDIRECT]}, timeout=10)
    assert mixed.status_code == 401


def test_a_confidential_client_gets_a_secret_and_must_use_it(world: World) -> None:
    registered = register(world.base, REDIRECT, token_endpoint_auth_method="client_secret_basic").json()
    assert registered["client_secret"]
    wrong = httpx.post(
        f"{world.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        auth=(registered["client_id"], "wrong"),
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    right = httpx.post(
        f"{world.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert right.status_code == 400 and right.json()["error"] == "invalid_grant"
