"""What the identity tests share: a user's real upstream tokens from oidc-provider, and the parts that keep them."""

import asyncio
import base64
import sys
import time

import httpx
import orjson
from redis.asyncio import Redis

from shared.identity.oidc import AuthServer, Pkce, discover
from shared.identity.refresh import Refresher
from shared.identity.sealing import Keyring
from shared.identity.store import SealedStore, Tokens
from tests.oidc import MUSTER_CLIENT, MUSTER_SECRET, code_of, sign_in


def upstream_login(issuer: str, redirect_uri: str, user: str) -> dict[str, str]:
    """The token response of muster's client after `user` signed in at the provider."""
    pkce = Pkce()
    url = str(
        httpx.URL(
            f"{issuer}/auth",
            params={
                "client_id": MUSTER_CLIENT,
                "response_type": "code",
                "redirect_uri": redirect_uri,
                "scope": "openid email profile groups offline_access",
                "code_challenge": pkce.challenge,
                "code_challenge_method": "S256",
                "nonce": "n",
            },
        )
    )
    with httpx.Client(timeout=10) as browser:
        code = code_of(sign_in(browser, url, user))["code"]
    response = httpx.post(
        f"{issuer}/token",
        auth=(MUSTER_CLIENT, MUSTER_SECRET),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pkce.verifier,
        },
    )
    response.raise_for_status()
    body: dict[str, str] = response.json()
    return body


async def parts(
    valkey_url: str, key: str, issuer: str
) -> tuple[Redis, SealedStore, AuthServer, Refresher, httpx.AsyncClient]:
    valkey = Redis.from_url(valkey_url)
    sealed = SealedStore(valkey, Keyring([base64.b64decode(key)]))
    http = httpx.AsyncClient(timeout=10)
    upstream = AuthServer(http, await discover(http, issuer), MUSTER_CLIENT, MUSTER_SECRET)
    return valkey, sealed, upstream, Refresher(valkey, sealed, margin=60), http


async def refresh_many(valkey_url: str, key: str, issuer: str, store_key: str, count: int) -> list[str]:
    """`count` concurrent callers asking for fresh tokens at once, after the barrier key `go` appears."""
    valkey, _sealed, upstream, refresher, http = await parts(valkey_url, key, issuer)
    try:
        await valkey.set(f"ready:{store_key}:{time.monotonic_ns()}", 1)
        while not await valkey.exists("go"):
            await asyncio.sleep(0.005)
        results = await asyncio.gather(
            *(refresher.fresh(store_key, upstream.refresh, lambda _: 3600) for _ in range(count))
        )
        return [t.access_token for t in results]
    finally:
        await http.aclose()
        await valkey.aclose()


def expired(tokens: Tokens) -> Tokens:
    return tokens.model_copy(update={"expires_at": time.time() - 1})


if __name__ == "__main__":
    # python -m tests.shared.identity.upstream VALKEY KEY ISSUER STORE_KEY COUNT: the second process of a refresh storm
    found = asyncio.run(refresh_many(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
    sys.stdout.write(orjson.dumps(found).decode())
