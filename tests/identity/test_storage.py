"""What the whole stack wrote to Valkey after logins and calls in every mode: no token in plaintext anywhere, not
in the sealed stores, not in the call streams, not in the session records or the per-user listings."""

import base64
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.identity import keys
from shared.identity.sealing import Keyring
from shared.identity.store import SealedStore, Tokens
from tests.identity.conftest import PODS, Agent, World, text

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def everything(valkey: Any) -> bytes:
    """Every key and every value of every type, as one blob of bytes (valkey: a bytes-returning client)."""
    blob = bytearray()
    async for key in valkey.scan_iter(count=1000):
        kind = (await valkey.type(key)).decode()
        value: Any
        if kind == "string":
            value = [await valkey.get(key)]
        elif kind == "hash":
            value = [x for pair in (await valkey.hgetall(key)).items() for x in pair]
        elif kind == "list":
            value = await valkey.lrange(key, 0, -1)
        elif kind == "set":
            value = list(await valkey.smembers(key))
        elif kind == "zset":
            value = await valkey.zrange(key, 0, -1)
        elif kind == "stream":
            value = [x for _, fields in await valkey.xrange(key) for pair in fields.items() for x in pair]
        else:
            value = []
        blob += key + b"\n" + b"\n".join(v for v in value if isinstance(v, bytes)) + b"\n"
    return bytes(blob)


async def test_no_token_is_stored_in_plaintext_anywhere(world: World) -> None:
    user = world.sign_in("zoe")
    async with Agent(world.url(0), user.access_token) as agent:
        for tool in ("x_sso_list", "x_exchange_list", "x_open_list"):
            assert "giantswarm" in text(await agent.call(tool, PODS))
    dex = await world.upstream_tokens(user)
    secrets = [
        user.access_token.split(".", 1)[1],  # the part after the family id, which names a login and is no secret
        user.refresh_token.split(".", 1)[1],
        dex.access_token,
        dex.refresh_token,
        dex.id_token,
    ]
    valkey = Redis.from_url(world.muster.valkey_url)
    try:
        sealed = SealedStore(valkey, Keyring([base64.b64decode(world.key)]))
        uma = await sealed.get(keys.server_token("uma", "oauth"), Tokens)  # from the per-server login test, if run
        if uma is not None:
            secrets += [uma.access_token, uma.refresh_token]
        blob = await everything(valkey)
    finally:
        await valkey.aclose()
    assert user.family.encode() in blob  # the scan sees what the stack wrote: the login's name is there
    for secret in secrets:
        assert secret and secret.encode() not in blob
