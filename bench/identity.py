"""What sign-in costs per call: muster with auth on next to the same muster with auth off (goal: within +0.1 ms of
CPU per call in ingress and worker together).

A second muster runs beside the harness's (its own Valkey, discovery, one worker, one ingress) with
MUSTER_AUTH=oidc in front of oidc-provider as Dex. The load generator's token is minted directly through the
authority's grants (no browser), and its login's Dex tokens come from a real sign-in at the provider, so that:

- "auth, no downstream auth": the same k8s stand-in as the plain targets; each request's bearer is checked (an
  in-process lookup once the replica has seen the token), and the call carries the login.
- "auth, forwardToken": a second k8s stand-in that validates the forwarded Dex ID token as mcp-kubernetes does;
  the worker adds the user's token to each call (an in-process lookup; refreshed at most once per token life).

Each target runs one caller sequentially and 64 callers for a few seconds; the report gives ingress + worker CPU
per call for each, and the difference to "muster 1 worker" (auth off). The stand-in's own JWT validation shows
under "upstream", not under muster.

`make bench` runs it after the main workloads and adds the table to the page ("Sign-in"); alone:

    python -m bench --only identity [--quick] [--rounds N]     (writes docs/benchmarks/identity.json)
"""

import asyncio
import base64
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis

from bench.harness import UPSTREAMS, Harness, Target, Upstream
from bench.load import INIT
from muster.stack import free_port
from services.ingress.oauth.grants import Family, Grants
from shared.identity import keys
from shared.identity.sealing import Keyring
from shared.identity.store import SealedStore, Tokens
from tests.oidc import MUSTER_CLIENT, MUSTER_SECRET, OidcProvider, client
from tests.shared.identity.upstream import upstream_login

FORWARDED = Upstream("k8ssso", "get", {"resourceType": "namespaces", "name": "default"})
CALLERS = 64


@dataclass
class Signed:
    """The auth-on muster: its targets, and the provider it signs in at."""

    targets: list[Target]
    dex: OidcProvider


def _server(name: str, url: str, auth: str = "") -> str:
    return (
        f"apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: {name}\n"
        f"spec:\n  type: streamable-http\n  url: {url}\n{auth}"
    )


async def _mint(valkey_url: str, key: str, public: str, dex: OidcProvider) -> str:
    """A muster access token for user "bench" (one family, as a login would leave it), with real Dex tokens."""
    valkey = Redis.from_url(valkey_url)
    try:
        sealed = SealedStore(valkey, Keyring([base64.b64decode(key)]))
        grants = Grants(valkey, sealed, access_seconds=86400, refresh_seconds=86400, code_seconds=60)
        family = Family(
            subject="bench", client_id="bench", scopes=["mcp"], resource=f"{public}/mcp", created=time.time()
        )
        family_id = await grants.new_family(family)
        issued = await grants.issue(family_id, family, ["mcp"])
        body = await asyncio.to_thread(upstream_login, dex.issuer, f"{public}/oauth/callback", "bench")
        now = time.time()
        tokens = Tokens(
            issuer=dex.issuer,
            access_token=body["access_token"],
            expires_at=now + float(body["expires_in"]),
            refresh_token=body.get("refresh_token"),
            id_token=body["id_token"],
            id_expires_at=now + float(body["expires_in"]),
            obtained_at=now,
        )
        await sealed.put(keys.upstream(family_id), tokens, 86400)
        return issued.access_token
    finally:
        await valkey.aclose()


def start(harness: Harness) -> Signed:
    """The auth-on muster beside the harness's, on the same k8s stand-in."""
    stack = harness.stack
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    # Dex's tokens live an hour here, as Dex's do by default: refresh is not what this measures
    dex = OidcProvider(
        [client(MUSTER_CLIENT, [f"{public}/oauth/callback"], MUSTER_SECRET)],
        env={"OIDC_ID_TTL": "3600", "OIDC_ACCESS_TTL": "3600"},
    ).start()
    sso_port = free_port()
    child = stack.python(
        "k8s stand-in (validates tokens)", "demo.kubernetes", "--cluster", "bench", "--port", str(sso_port),
        "--oidc-issuer", dex.issuer, "--oidc-audience", MUSTER_CLIENT,
    )  # fmt: skip
    stack.wait_tcp(sso_port, "k8s stand-in (validates tokens)")
    assert child.process is not None
    harness.upstream_pids[FORWARDED.name] = child.process.pid
    servers = harness.root / "servers-auth"
    servers.mkdir(exist_ok=True)
    k8s_url = next(t for t in harness.targets if t.name == "direct").urls["k8s"]
    (servers / "k8s.yaml").write_text(_server("k8s", k8s_url))
    forward = "  auth:\n    forwardToken: true\n"
    (servers / "k8ssso.yaml").write_text(_server("k8ssso", f"http://127.0.0.1:{sso_port}/mcp", forward))
    # A Valkey of its own, in a folder of its own: in the harness's, it would start from the harness's catalog and
    # discovery lease (and write into its append-only file), and serve those until its own discovery took over.
    stack.data = harness.root / "data-auth"
    valkey_url = stack.valkey(free_port())
    valkey = stack.children[-1].process
    assert valkey is not None
    key = base64.b64encode(os.urandom(32)).decode()
    env = {
        **harness.env,
        "MUSTER_VALKEY_URL": valkey_url,
        "MUSTER_AUTH": "oidc",
        "MUSTER_PUBLIC_URL": public,
        "MUSTER_OIDC_ISSUER": dex.issuer,
        "MUSTER_OIDC_CLIENT_ID": MUSTER_CLIENT,
        "MUSTER_OIDC_CLIENT_SECRET": MUSTER_SECRET,
        "MUSTER_ENCRYPTION_KEY": key,
        # Every caller here is user "bench", one principal: with the default fair share its 64 callers would
        # queue behind 8 at a time, where the auth-off target's 64 sessions do not; this measures sign-in's cost.
        "MUSTER_INGRESS_FAIR_SHARE": "1024",
    }
    stack.python("discovery (auth)", "services.discovery", env={**env, "MUSTER_SERVERS": str(servers)})
    worker = stack.python("worker (auth)", "services.worker", env={**env, "MUSTER_WORKER_ID": "bench-auth"})
    ingress = stack.python("ingress (auth)", "services.ingress", env={**env, "MUSTER_PORT": str(port)})
    stack.wait_http(f"{public}/readyz", "ingress (auth)")
    token = asyncio.run(_mint(valkey_url, key, public, dex))
    endpoint = f"{public}/mcp"
    _wait_listed(endpoint, token, {"x_k8s_get", "x_k8ssso_get"})
    assert worker.process is not None and ingress.process is not None
    roles = {"ingress": [ingress.process.pid], "worker": [worker.process.pid], "valkey": [valkey.pid]}
    targets = [
        Target("auth, no downstream auth", {"k8s": endpoint}, {"k8s": "x_k8s_get"}, roles, bearer=token),
        Target("auth, forwardToken", {FORWARDED.name: endpoint}, {FORWARDED.name: "x_k8ssso_get"}, roles, bearer=token),
    ]
    return Signed(targets, dex)


def _wait_listed(endpoint: str, token: str, tools: set[str], timeout: float = 60.0) -> None:
    """Until the bench's user sees `tools`: discovery has published the servers, and the user's listing of the
    forwardToken server (made through the worker with the user's ID token) has succeeded."""
    from tests.conftest import HEADERS, result

    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    missing = tools
    with httpx.Client(headers=headers, timeout=15) as http:
        while time.monotonic() < deadline:
            opened = http.post(endpoint, content=INIT)
            opened.raise_for_status()
            session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
            listed = http.post(endpoint, headers=session, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            missing = tools - {t["name"] for t in result(listed)["result"]["tools"]}
            if not missing:
                return
            time.sleep(0.5)
    raise RuntimeError(f"muster with auth on did not list {sorted(missing)} to the bench's user within {timeout:.0f} s")


def _muster_ms(result: dict[str, Any]) -> float | None:
    cpu = result["cpu_ms_per_call"]
    if cpu.get("ingress") is None or cpu.get("worker") is None:
        return None
    return round(float(cpu["ingress"] + cpu["worker"]), 3)


def run(harness: Harness, settings: dict[str, Any], rounds: int) -> dict[str, Any]:
    log = harness.stack.log
    signed = start(harness)
    plain = next(t for t in harness.targets if t.name == "muster 1 worker")
    plans = [(plain, UPSTREAMS[0]), (signed.targets[0], UPSTREAMS[0]), (signed.targets[1], FORWARDED)]
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for n in range(rounds):
            log(f"identity round {n + 1} of {rounds}")
            for target, upstream in plans:
                harness.load(target, upstream, callers=1, calls=settings["warmup"])
                one = harness.load(target, upstream, callers=1, calls=settings["sequential"])
                many = harness.load(
                    target, upstream, callers=CALLERS, seconds=settings["seconds"], processes=settings["processes"]
                )
                for label, result in (("1 caller", one), (f"{CALLERS} callers", many)):
                    result.pop("latencies", None)
                    found.setdefault(target.name, {}).setdefault(label, []).append(result)
                    why = f" {result['failures']}" if result["failures"] else ""  # what the failed calls got back
                    log(
                        f"  {target.name:25} {label:10} muster CPU {_muster_ms(result)} ms/call "
                        f"({result['rate']}/s, p50 {result['p50']} ms, failed {result['failed']}{why})"
                    )
    finally:
        signed.dex.stop()
    return summary(found)


def summary(found: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per target and load: the median round's muster CPU per call, and its difference to auth off."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for target, loads in found.items():
        for label, runs in loads.items():
            values = sorted(v for v in (_muster_ms(r) for r in runs) if v is not None)
            median = values[len(values) // 2] if values else None
            table.setdefault(target, {})[label] = {
                "muster_cpu_ms_per_call": median,
                "rounds": values,
                "rate": sorted(r["rate"] for r in runs)[len(runs) // 2],
                "failed": sum(r["failed"] for r in runs),
            }
    off = table.get("muster 1 worker", {})
    for rows in table.values():
        for label, row in rows.items():
            base = off.get(label, {}).get("muster_cpu_ms_per_call")
            if base is not None and row["muster_cpu_ms_per_call"] is not None:
                row["vs_auth_off_ms"] = round(row["muster_cpu_ms_per_call"] - base, 3)
    return {"goal": "auth on within +0.1 ms of muster CPU per call (ingress + worker)", "cpu": table}
