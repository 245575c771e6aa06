"""promtool, which checks and unit-tests the alert rules, installed from Debian's `prometheus` package into
.cache/promtool without installing (or running) the Prometheus daemon: `apt-get download` + `dpkg -x`.

python -m tests.monitoring.promtool installs it; `make test` does so before running the tests. In CI a
promtool that cannot be installed is an error; elsewhere (a machine without apt) the tests that need it skip
and say why.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "promtool"
BINARY = CACHE / "promtool"


class Unavailable(Exception):
    pass


def in_ci() -> bool:
    """CI sets CI; a run of .ci/run counts too, whatever its environment."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        return True
    try:
        return any(".ci/run" in " ".join(p.cmdline()) for p in psutil.Process().parents())
    except psutil.Error:
        return False


def _works(binary: Path) -> bool:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False


def _download(into: Path) -> Path:
    apt = shutil.which("apt-get")
    if apt is None or shutil.which("dpkg") is None:
        raise Unavailable("apt-get and dpkg are needed to install promtool from Debian's prometheus package")
    attempt = subprocess.run([apt, "download", "prometheus"], cwd=into, capture_output=True, text=True, timeout=600)
    if attempt.returncode != 0 and os.geteuid() == 0:
        # a fresh machine has no package lists yet
        subprocess.run([apt, "update"], capture_output=True, timeout=600, check=False)
        attempt = subprocess.run([apt, "download", "prometheus"], cwd=into, capture_output=True, text=True, timeout=600)
    found = sorted(into.glob("prometheus_*.deb"))
    if attempt.returncode != 0 or not found:
        raise Unavailable(f"apt-get download prometheus failed: {attempt.stderr.strip()[-500:]}")
    return found[-1]


def ensure() -> Path:
    """The path of a working promtool, installing it first if need be."""
    if _works(BINARY):
        return BINARY
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        os.chmod(tmp, 0o755)  # apt-get download drops privileges to _apt where it can, and _apt must write here
        deb = _download(Path(tmp))
        unpacked = Path(tmp) / "unpacked"
        subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True, timeout=300)
        shutil.copy2(unpacked / "usr" / "bin" / "promtool", BINARY)  # the daemon and the web assets stay out
    if not _works(BINARY):
        raise Unavailable(f"{BINARY} does not run after unpacking {deb.name}")
    return BINARY


if __name__ == "__main__":
    try:
        print(f"promtool ready: {ensure()}", file=sys.stderr)
    except Unavailable as exc:
        if in_ci():
            raise SystemExit(f"promtool: {exc}") from None
        print(f"promtool not installed ({exc}); the alert rule tests will skip", file=sys.stderr)
