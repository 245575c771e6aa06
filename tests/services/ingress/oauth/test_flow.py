"""muster's authorization server end to end, in front of a real oidc-provider, on a real valkey-server, over HTTP."""

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis

from muster.stack import free_port
from services.ingress.oauth.grants import family_of
from shared.identity import keys
from shared.identity.oidc import Pkce
from tests.oidc import K8S_CLIENT, K8S_SECRET, MUSTER_CLIENT, MUSTER_SECRET, OidcProvider, code_of, sign_in
from tests.oidc.harness import Browser, login, provider_for, register, serve, settings_for, start_valkey

pytestmark = pytest.mark.slow  # runs oidc-provider
REDIRECT = "http://127.0.0.1:7777/callback"


@dataclass
class World:
    base: str
    provider: OidcProvider
    valkey_url: str
    client_id: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    stack, valkey_url = start_valkey(tmp_path_factory.mktemp("valkey"))
    base = f"http://127.0.0.1:{free_port()}"
    provider = provider_for(base)
    try:
        settings = settings_for(base, provider.issuer, valkey_url, oauth_scopes=["mcp", "mcp:read"])
        with serve(settings):
            client_id = register(base, REDIRECT).json()["client_id"]
            yield World(base, provider, valkey_url, client_id)
    finally:
        provider.stop()
        stack.stop()


def whoami(world: World, token: str) -> httpx.Response:
    return httpx.get(f"{world.base}/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_the_discovery_documents_name_muster_its_endpoints_and_its_mcp_resource(world: World) -> None:
    asm = httpx.get(f"{world.base}/.well-known/oauth-authorization-server").json()
    assert asm["issuer"] == world.base
    assert asm["code_challenge_methods_supported"] == ["S256"]
    assert asm["authorization_response_iss_parameter_supported"] is True
    assert asm["client_id_metadata_document_supported"] is True
    assert httpx.get(f"{world.base}/.well-known/openid-configuration").json() == asm
    prm = httpx.get(f"{world.base}/.well-known/oauth-protected-resource/mcp").json()
    assert prm["resource"] == f"{world.base}/mcp" and prm["authorization_servers"] == [world.base]
    assert httpx.get(f"{world.base}/.well-known/oauth-protected-resource").json()["resource"] == world.base


def test_a_user_signs_in_through_the_provider_and_the_token_names_them_on_mcp(world: World) -> None:
    tokens = login(world.base, world.client_id, REDIRECT, "alice")
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "mcp mcp:read"
    me = whoami(world, tokens["access_token"])
    assert me.status_code == 200
    assert me.json()["subject"] == "alice" and me.json()["email"] == "alice@example.com"


def test_without_a_token_mcp_answers_401_naming_the_resource_metadata(world: World) -> None:
    response = httpx.get(f"{world.base}/whoami")
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge == f'Bearer resource_metadata="{world.base}/.well-known/oauth-protected-resource/mcp"'
    bad = whoami(world, "nobody.knows-this-token")
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]


def test_consent_is_asked_once_per_client_in_a_browser(world: World, request: pytest.FixtureRequest) -> None:
    browser = Browser(world.base)
    request.addfinalizer(browser.http.close)
    login(world.base, world.client_id, REDIRECT, "carol", browser)
    params = dict(
        response_type="code",
        client_id=world.client_id,
        redirect_uri=REDIRECT,
        code_challenge=Pkce().challenge,
        code_challenge_method="S256",
        state="s",
    )
    again = browser.authorize(**params)
    assert again.status_code == 302 and again.headers["location"].startswith(world.provider.issuer)
    other = register(world.base, REDIRECT).json()["client_id"]
    assert browser.authorize(**{**params, "client_id": other}).status_code == 200  # a new client: asked again


def test_a_denied_consent_sends_the_client_access_denied(world: World, request: pytest.FixtureRequest) -> None:
    browser = Browser(world.base)
    request.addfinalizer(browser.http.close)
    page = browser.authorize(
        response_type="code",
        client_id=world.client_id,
        redirect_uri=REDIRECT,
        code_challenge=Pkce().challenge,
        code_challenge_method="S256",
        state="s1",
    )
    answer = code_of(browser.approve(page, "deny"))
    assert answer == {
        "error": "access_denied",
        "error_description": "the user did not approve the client",
        "state": "s1",
        "iss": world.base,
    }


def test_registration_without_the_registration_token_is_refused(world: World) -> None:
    for token in (None, "wrong-token"):
        response = register(world.base, REDIRECT, token=token)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
    assert register(world.base, "javascript://x").json()["error"] == "invalid_redirect_uri"
    assert register(world.base, "http://example.com/cb").json()["error"] == "invalid_redirect_uri"


def test_a_replayed_code_is_refused_and_revokes_the_tokens_it_gave(world: World) -> None:
    tokens = login(world.base, world.client_id, REDIRECT, "dave")
    replay = httpx.post(
        f"{world.base}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": tokens["code"],
            "redirect_uri": REDIRECT,
            "client_id": world.client_id,
            "code_verifier": tokens["verifier"],
        },
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    refreshed = httpx.post(
        f"{world.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": world.client_id},
    )
    assert refreshed.json()["error"] == "invalid_grant"


def test_a_wrong_redirect_uri_is_told_to_the_browser_and_not_followed(world: World) -> None:
    response = httpx.get(
        f"{world.base}/oauth/authorize",
        params=dict(
            response_type="code",
            client_id=world.client_id,
            redirect_uri="http://evil.example/cb",
            code_challenge=Pkce().challenge,
            code_challenge_method="S256",
        ),
    )
    assert response.status_code == 400 and "location" not in response.headers
    assert response.json()["error"] == "invalid_request"
    unknown = httpx.get(
        f"{world.base}/oauth/authorize", params={"response_type": "code", "client_id": "nope", "redirect_uri": REDIRECT}
    )
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"resource": "https://other.example/mcp"}, "invalid_target"),
        ({"scope": "admin"}, "invalid_scope"),
    ],
)
def test_a_bad_authorization_request_goes_back_to_the_client_with_the_rfc_error(
    world: World, change: dict[str, str | None], error: str
) -> None:
    params = {
        "response_type": "code",
        "client_id": world.client_id,
        "redirect_uri": REDIRECT,
        "state": "st",
        "code_challenge": Pkce().challenge,
        "code_challenge_method": "S256",
    }
    params = {k: v for k, v in {**params, **change}.items() if v is not None}
    response = httpx.get(f"{world.base}/oauth/authorize", params=params)
    assert response.status_code == 302
    answer = code_of(response)
    assert answer["error"] == error and answer["state"] == "st" and answer["iss"] == world.base


def test_a_repeated_parameter_is_invalid_request_everywhere(world: World) -> None:
    query = f"client_id={world.client_id}&client_id=other&redirect_uri={REDIRECT}&response_type=code"
    response = httpx.get(f"{world.base}/oauth/authorize?{query}")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    token = httpx.post(
        f"{world.base}/oauth/token",
        content=f"grant_type=authorization_code&code=a&code=b&client_id={world.client_id}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert token.status_code == 400 and token.json()["error"] == "invalid_request"
    missing = httpx.post(f"{world.base}/oauth/token", data={"client_id": world.client_id})
    assert missing.json() == {"error": "invalid_request", "error_description": "parameter 'grant_type' is missing"}
    unknown = httpx.post(f"{world.base}/oauth/token", data={"client_id": world.client_id, "grant_type": "password"})
    assert unknown.json()["error"] == "unsupported_grant_type"


def test_a_code_with_the_wrong_verifier_is_refused(world: World, request: pytest.FixtureRequest) -> None:
    tokens = login(world.base, world.client_id, REDIRECT, "erin")
    assert whoami(world, tokens["access_token"]).status_code == 200
    browser = Browser(world.base)
    request.addfinalizer(browser.http.close)
    pkce = Pkce()
    first = browser.authorize(
        response_type="code",
        client_id=world.client_id,
        redirect_uri=REDIRECT,
        code_challenge=pkce.challenge,
        code_challenge_method="S256",
        state="x",
    )
    code = code_of(browser.through_provider(browser.approve(first), "erin"))["code"]
    wrong = httpx.post(
        f"{world.base}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": world.client_id,
            "code_verifier": Pkce().verifier,
        },
    )
    assert wrong.json()["error"] == "invalid_grant"


def refresh(world: World, token: str) -> httpx.Response:
    return httpx.post(
        f"{world.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": world.client_id},
    )


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_whole_family(world: World) -> None:
    first = login(world.base, world.client_id, REDIRECT, "frank")
    second = refresh(world, first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    third = refresh(world, second["refresh_token"]).json()
    assert whoami(world, third["access_token"]).status_code == 200
    revoked_upstream = world.provider.stats()["revocations"]
    reuse = refresh(world, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert world.provider.stats()["revocations"] == revoked_upstream + 1  # the login ends at Dex too
    assert refresh(world, third["refresh_token"]).json()["error"] == "invalid_grant"
    # Its access tokens are dead in Valkey: a replica that has not cached them refuses them, one that has lets go
    # within oauth_cache_seconds.
    for token in (second["access_token"], third["access_token"]):
        assert not live_in_valkey(world, token)


def live_in_valkey(world: World, token: str) -> bool:
    client = redis.Redis.from_url(world.valkey_url)
    try:
        family = family_of(token)
        return bool(family and client.exists(keys.access(token)) and client.exists(keys.family_current(family)))
    finally:
        client.close()


def test_revoking_a_refresh_token_ends_the_login(world: World) -> None:
    tokens = login(world.base, world.client_id, REDIRECT, "gina")
    revoked = httpx.post(
        f"{world.base}/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": world.client_id}
    )
    assert revoked.status_code == 200
    assert refresh(world, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert whoami(world, tokens["access_token"]).status_code == 401
    unknown = httpx.post(f"{world.base}/oauth/revoke", data={"token": "whatever", "client_id": world.client_id})
    assert unknown.status_code == 200  # RFC 7009 §2.2


def test_a_token_for_another_resource_or_audience_is_refused_with_401(
    world: World, request: pytest.FixtureRequest
) -> None:
    b = Browser(world.provider.issuer)
    request.addfinalizer(b.http.close)
    pkce = Pkce()
    for client_id, secret, status in ((K8S_CLIENT, K8S_SECRET, 200), (MUSTER_CLIENT, MUSTER_SECRET, 401)):
        redirect = "http://127.0.0.1:1/callback" if client_id == K8S_CLIENT else f"{world.base}/oauth/callback"
        url = str(
            httpx.URL(
                f"{world.provider.issuer}/auth",
                params={
                    "client_id": client_id,
                    "response_type": "code",
                    "redirect_uri": redirect,
                    "scope": "openid email groups",
                    "code_challenge": pkce.challenge,
                    "code_challenge_method": "S256",
                    "nonce": "n",
                },
            )
        )
        code = code_of(sign_in(b.http, url, "hank"))["code"]
        id_token = httpx.post(
            f"{world.provider.issuer}/token",
            auth=(client_id, secret),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": pkce.verifier,
            },
        ).json()["id_token"]
        me = whoami(world, id_token)
        assert me.status_code == status, (client_id, me.text)
        if status == 200:
            assert me.json()["subject"] == "hank" and me.json()["source"] == "sso"


def test_bad_input_at_every_endpoint_leaves_valkey_as_it_was(world: World) -> None:
    client = redis.Redis.from_url(world.valkey_url)
    try:
        before = set(client.keys("*"))
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        bad = [
            httpx.post(f"{world.base}/oauth/register", json={"redirect_uris": [REDIRECT]}),
            httpx.post(f"{world.base}/oauth/register", content=b"{", headers={"Authorization": "Bearer x"}),
            httpx.post(f"{world.base}/oauth/token", content=b"grant_type=x&grant_type=y", headers=form),
            httpx.post(f"{world.base}/oauth/token", json={"grant_type": "authorization_code"}),
            httpx.post(
                f"{world.base}/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": "nope",
                    "redirect_uri": REDIRECT,
                    "client_id": world.client_id,
                    "code_verifier": "v",
                },
            ),
            httpx.post(f"{world.base}/oauth/revoke", data={"token": "x"}),
            httpx.get(f"{world.base}/oauth/authorize", params={"client_id": world.client_id}),
            httpx.get(f"{world.base}/oauth/callback", params={"state": "unknown", "code": "c"}),
            httpx.post(f"{world.base}/oauth/consent", data={"request": "unknown", "decision": "approve"}),
            httpx.get(f"{world.base}/oauth/proxy/start", params={"state": "unknown"}),
            httpx.get(f"{world.base}/oauth/proxy/callback", params={"state": "unknown", "code": "c"}),
        ]
        assert [r.status_code for r in bad] == [401, 400, 400, 400, 400, 401, 400, 400, 400, 400, 400]
        assert set(client.keys("*")) == before
    finally:
        client.close()
