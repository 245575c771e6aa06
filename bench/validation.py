"""What checking a bearer token on /mcp costs: python -m bench.validation [--rounds N]

Measures ResourceGuard.check per call on a real valkey-server: a muster token the replica has seen (the common
case: an in-process lookup), one it has not (one Valkey round trip: the token's record and its family's liveness
in one pipeline, then unsealing), and the refusal of a request without a token. Wall-clock microseconds per
check, median of rounds; the machine's other load shows in the uncached figure, which waits on Valkey.
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from redis.asyncio import Redis

from muster.stack import Stack, free_port
from services.ingress.oauth.grants import Family, Grants
from services.ingress.oauth.resource import ResourceGuard, Sso
from shared.identity.oidc import Jwks
from shared.identity.sealing import Keyring
from shared.identity.store import SealedStore

RESOURCE = "http://127.0.0.1:8090/mcp"


async def measure(valkey_url: str, rounds: int, calls: int) -> dict[str, float]:
    valkey = Redis.from_url(valkey_url)
    sealed = SealedStore(valkey, Keyring([os.urandom(32)]))
    grants = Grants(valkey, sealed, access_seconds=1800, refresh_seconds=86400, code_seconds=60)
    family = Family(subject="bench", client_id="c", scopes=["mcp"], resource=RESOURCE, created=time.time())
    family_id = await grants.new_family(family)
    tokens = [(await grants.issue(family_id, family, ["mcp"])).access_token for _ in range(calls)]
    results: dict[str, list[float]] = {"cached": [], "uncached": [], "no token": []}
    for _ in range(rounds):
        guard = ResourceGuard(grants, resources=[RESOURCE], metadata_url=f"{RESOURCE}/prm", cache_seconds=60)
        heads = [[(b"authorization", f"Bearer {t}".encode())] for t in tokens]
        started = time.perf_counter()
        for head in heads:  # each token once: all misses
            await guard.check(head)
        results["uncached"].append((time.perf_counter() - started) / calls * 1e6)
        started = time.perf_counter()
        for head in heads:  # again: all hits
            await guard.check(head)
        results["cached"].append((time.perf_counter() - started) / calls * 1e6)
        started = time.perf_counter()
        for _ in range(calls):
            await guard.check([])
        results["no token"].append((time.perf_counter() - started) / calls * 1e6)
    results["sso id token, uncached"] = await sso(grants, rounds, calls // 10)
    await valkey.aclose()
    return {name: statistics.median(values) for name, values in results.items()}


async def sso(grants: Grants, rounds: int, calls: int) -> list[float]:
    """An upstream RS256 ID token verified against a JWKS already fetched (signature, iss, aud, exp)."""
    key = RSAKey.generate_key(2048, parameters={"kid": "k"})
    keys = KeySet([key])
    now = int(time.time())
    claims = {"iss": "https://dex", "aud": "cli", "sub": "u", "email": "u@x", "iat": now, "exp": now + 600}
    token = jwt.encode({"alg": "RS256", "kid": "k"}, claims, key)
    jwks = Jwks(None, "https://dex/keys")  # type: ignore[arg-type]
    jwks.keys, jwks.fetched = keys, time.monotonic()
    found = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            guard = ResourceGuard(grants, resources=[RESOURCE], metadata_url="m", sso=Sso("https://dex", ["cli"], jwks))
            await guard.check([(b"authorization", f"Bearer {token}".encode())])
        found.append((time.perf_counter() - started) / calls * 1e6)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        stack = Stack(Path(folder), log=lambda _: None)
        try:
            url = stack.valkey(free_port())
            found = asyncio.run(measure(url, args.rounds, args.calls))
        finally:
            stack.stop()
    for name, micros in found.items():
        print(f"{name:>22}: {micros:8.1f} µs per check")


if __name__ == "__main__":
    main()
