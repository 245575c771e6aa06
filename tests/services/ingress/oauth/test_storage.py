"""What a login leaves in Valkey: sealed values, no token in plaintext, and keys that rotate without a logout."""

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from muster.stack import Stack, free_port
from shared.identity import keys
from shared.identity.sealing import Keyring
from shared.identity.store import Tokens
from tests.oidc import OidcProvider
from tests.oidc.harness import login, new_key, provider_for, register, serve, settings_for, start_valkey

pytestmark = pytest.mark.slow  # runs oidc-provider
REDIRECT = "http://127.0.0.1:7777/callback"


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OidcProvider, str]]:
    stack, valkey_url = start_valkey(tmp_path_factory.mktemp("valkey"))
    base = f"http://127.0.0.1:{free_port()}"
    provider = provider_for(base)
    try:
        yield base, provider, valkey_url
    finally:
        provider.stop()
        stack.stop()


def dump(valkey_url: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(valkey_url)
    try:
        values: dict[bytes, bytes] = {}
        for key in client.scan_iter(count=1000):
            if client.type(key) == b"string":
                value = client.get(key)
                assert isinstance(value, bytes)  # a client without decode_responses, and the key is there
                values[key] = value
        return values
    finally:
        client.close()


def test_no_token_of_a_login_is_in_valkey_in_plaintext(parts: tuple[str, OidcProvider, str]) -> None:
    base, provider, valkey_url = parts
    key = new_key()
    with serve(settings_for(base, provider.issuer, valkey_url, encryption_key=key)):
        client_id = register(base, REDIRECT).json()["client_id"]
        tokens = login(base, client_id, REDIRECT, "ivy")
        refreshed = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id},
        ).json()
    raw = dump(valkey_url)
    keyring = Keyring([base64.b64decode(key)])
    upstream = [Tokens.model_validate_json(keyring.open(v, k)) for k, v in raw.items() if b":upstream:" in k]
    assert len(upstream) == 1
    secrets = [
        tokens["access_token"],
        tokens["refresh_token"],
        tokens["code"],
        refreshed["access_token"],
        refreshed["refresh_token"],
        upstream[0].access_token,
        upstream[0].refresh_token,
        upstream[0].id_token,
    ]
    for name, value in raw.items():
        for secret in secrets:
            assert secret is not None
            assert secret.encode() not in name and secret.encode() not in value, name
            # nor their halves: the random part of muster's tokens is the secret part
            assert secret.encode()[-20:] not in value
    sealed = [
        k for k in raw if any(p in k for p in (b":upstream:", b":family:", b":access:", b":refresh:", b":client:"))
    ]
    assert sealed and all(raw[k][:1] == b"\x01" for k in sealed)


def test_a_value_copied_to_another_key_does_not_open(parts: tuple[str, OidcProvider, str]) -> None:
    keyring = Keyring([base64.b64decode(new_key())])
    sealed = keyring.seal(b"secret", keys.upstream("a").encode())
    from shared.identity.errors import Unsealable

    with pytest.raises(Unsealable):
        keyring.open(sealed, keys.upstream("b").encode())


def test_rotating_the_encryption_key_keeps_existing_logins(parts: tuple[str, OidcProvider, str]) -> None:
    base, provider, valkey_url = parts
    old, new = new_key(), new_key()
    with serve(settings_for(base, provider.issuer, valkey_url, encryption_key=old)):
        client_id = register(base, REDIRECT).json()["client_id"]
        tokens = login(base, client_id, REDIRECT, "jack")
    with serve(settings_for(base, provider.issuer, valkey_url, encryption_key=f"{new},{old}")):
        me = httpx.get(f"{base}/whoami", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 200 and me.json()["subject"] == "jack"
        refreshed = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id},
        )
        assert refreshed.status_code == 200
        other = login(base, client_id, REDIRECT, "kim")
    # what was written after the rotation is sealed with the new key: it opens without the old one
    new_only = Keyring([base64.b64decode(new)])
    name = keys.access(other["access_token"]).encode()
    assert new_only.open(dump(valkey_url)[name], name)
    with serve(settings_for(base, provider.issuer, valkey_url, encryption_key=new)):
        gone = httpx.get(f"{base}/whoami", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert gone.status_code == 401  # sealed under a key no longer configured
        assert (
            httpx.get(
                f"{base}/whoami", headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"}
            ).status_code
            == 200
        )


def test_a_token_without_a_required_scope_gets_403(parts: tuple[str, OidcProvider, str]) -> None:
    base, provider, valkey_url = parts
    settings = settings_for(
        base, provider.issuer, valkey_url, oauth_scopes=["mcp", "mcp:read"], oauth_required_scopes=["mcp"]
    )
    with serve(settings):
        client_id = register(base, REDIRECT).json()["client_id"]
        narrow = login(base, client_id, REDIRECT, "lee", scope="mcp:read")
        denied = httpx.get(f"{base}/whoami", headers={"Authorization": f"Bearer {narrow['access_token']}"})
        assert denied.status_code == 403
        challenge = denied.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and 'scope="mcp"' in challenge
        assert "resource_metadata=" in challenge
        full = login(base, client_id, REDIRECT, "lee", scope="mcp mcp:read")
        assert (
            httpx.get(f"{base}/whoami", headers={"Authorization": f"Bearer {full['access_token']}"}).status_code == 200
        )


_ = (Path, Stack)
