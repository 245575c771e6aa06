"""The container image's entrypoint: `python -m muster.container ingress|worker|discovery|demo [ARGS]`.

One image runs every service; the first argument picks it. Valkey's password arrives as a mounted secret
(MUSTER_VALKEY_PASSWORD_FILE) or a variable (MUSTER_VALKEY_PASSWORD) and goes into MUSTER_VALKEY_URL
percent-encoded: a generated password holds `/`, `+` and `=`, which a URL cannot carry as they are, and every
Valkey client of muster takes the password from the URL. Then the service replaces this process.
"""

import os
import sys
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

MODULES = {
    "ingress": "services.ingress",
    "worker": "services.worker",
    "discovery": "services.discovery",
    "demo": "demo.kubernetes",  # the mcp-kubernetes stand-in, for compose.yaml
}
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def with_password(url: str, password: str) -> str:
    """`url` with `password` in it, unless the URL already names one."""
    parts = urlsplit(url)
    if parts.password is not None:
        return url
    user = quote(parts.username or "", safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def environment(env: Mapping[str, str]) -> dict[str, str]:
    result = {k: v for k, v in env.items() if k not in ("MUSTER_VALKEY_PASSWORD", "MUSTER_VALKEY_PASSWORD_FILE")}
    password = env.get("MUSTER_VALKEY_PASSWORD")
    if env.get("MUSTER_VALKEY_PASSWORD_FILE"):
        with open(env["MUSTER_VALKEY_PASSWORD_FILE"], encoding="utf-8") as file:
            password = file.read()
    if password:
        result["MUSTER_VALKEY_URL"] = with_password(env.get("MUSTER_VALKEY_URL", DEFAULT_URL), password)
    return result


def command(argv: list[str]) -> list[str]:
    if not argv or argv[0] not in MODULES:
        raise SystemExit(f"usage: python -m muster.container {{{'|'.join(MODULES)}}} [ARGS]")
    return [sys.executable, "-m", MODULES[argv[0]], *argv[1:]]


def main() -> None:
    argv = command(sys.argv[1:])
    os.execve(argv[0], argv, environment(os.environ))


if __name__ == "__main__":
    main()
