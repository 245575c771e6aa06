"""The `muster` command. `muster up` runs the whole stack on one machine on an embedded Valkey; `muster status`
shows how it is doing."""

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import orjson
from pydantic import ValidationError
from redis.exceptions import RedisError

from muster import status
from muster.stack import Stack, free_port
from services.discovery.config import DiscoverySettings
from services.ingress.config import IngressSettings
from services.ingress.oauth.config import OAuthSettings

DEMO_SERVERS = Path(__file__).resolve().parent.parent / "demo" / "servers"
DEMO_CLUSTERS = (("gazelle", 8101), ("graveler", 8102))
VALKEY_URL_FILE = "valkey.url"  # in the data folder: where `muster status` finds the Valkey `muster up` started


def _env(name: str, default: str) -> str:
    """An option only `muster up` has; the services' own options take their defaults from their settings."""
    return os.environ.get(f"MUSTER_{name}", default)


def parser() -> argparse.ArgumentParser:
    # The services' settings classes hold the defaults, and read the same MUSTER_<NAME> variables.
    ingress, discovery = IngressSettings(), DiscoverySettings()
    p = argparse.ArgumentParser(prog="muster", description="An MCP aggregator on Valkey streams.")
    commands = p.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run ingress, workers, discovery and an embedded Valkey (and the demo)")
    up.add_argument(
        "--servers",
        default=_env("SERVERS", ""),
        help="folder of MCPServer YAML files (default: the demo, with its two upstreams) [MUSTER_SERVERS]",
    )
    up.add_argument(
        "--prefix-mode",
        choices=["always", "conditional", "never"],
        default=discovery.prefix_mode,
        help="how tool and prompt names are prefixed [MUSTER_PREFIX_MODE]",
    )
    up.add_argument(
        "--expose",
        choices=["direct", "meta"],
        default=ingress.expose,
        help="aggregated tool list, or muster's meta-tools [MUSTER_EXPOSE]",
    )
    up.add_argument("--port", type=int, default=ingress.port, help="ingress port [MUSTER_PORT]")
    up.add_argument(
        "--auth",
        choices=["none", "oidc"],
        default=ingress.auth,
        help="oidc: users sign in through muster at an OIDC provider (MUSTER_OIDC_ISSUER, MUSTER_OIDC_CLIENT_ID, "
        "MUSTER_OIDC_CLIENT_SECRET, MUSTER_ENCRYPTION_KEY, MUSTER_REGISTRATION_TOKEN, MUSTER_PUBLIC_URL) [MUSTER_AUTH]",
    )
    up.add_argument("--workers", type=int, default=int(_env("WORKERS", "2")), help="worker processes [MUSTER_WORKERS]")
    up.add_argument("--data", default=_env("DATA", ".muster"), help="data folder for Valkey's files [MUSTER_DATA]")
    up.add_argument(
        "--json-logs",
        action="store_true",
        default=_env("LOG_JSON", "false").lower() in ("1", "true", "yes"),
        help="log JSON lines instead of text [MUSTER_LOG_JSON=true]",
    )
    st = commands.add_parser("status", help="servers, queues, workers and replicas, as Valkey knows them")
    st.add_argument(
        "--valkey-url",
        default=os.environ.get("MUSTER_VALKEY_URL", ""),
        help="the Valkey to read (default: the one `muster up` runs, else redis://127.0.0.1:6379/0) "
        "[MUSTER_VALKEY_URL]",
    )
    st.add_argument("--data", default=_env("DATA", ".muster"), help="`muster up`'s data folder [MUSTER_DATA]")
    st.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    return p


def auth_env(args: argparse.Namespace) -> dict[str, str]:
    """What the services read to run with sign-in; checked here, so that a missing setting stops `muster up` with
    its name instead of a service's traceback."""
    if args.auth == "none":
        return {"MUSTER_AUTH": "none"}
    env = {
        "MUSTER_AUTH": "oidc",
        "MUSTER_PUBLIC_URL": os.environ.get("MUSTER_PUBLIC_URL", f"http://127.0.0.1:{args.port}"),
    }
    try:
        OAuthSettings(public_url=env["MUSTER_PUBLIC_URL"])
    except ValidationError as exc:
        problems = "; ".join(
            f"MUSTER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()
        )
        raise RuntimeError(f"--auth oidc: {problems}") from None
    except (ValueError, OSError) as exc:
        raise RuntimeError(f"--auth oidc: {exc}") from None
    return env


def valkey_url(args: argparse.Namespace) -> str:
    if args.valkey_url:
        return str(args.valkey_url)
    written = Path(args.data) / VALKEY_URL_FILE
    if written.is_file():
        return written.read_text().strip()
    return "redis://127.0.0.1:6379/0"


def show_status(args: argparse.Namespace) -> int:
    url = valkey_url(args)
    try:
        found = asyncio.run(status.status(url))
    except (RedisError, OSError, TimeoutError) as exc:
        print(f"muster: cannot read {status.without_password(url)}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(found.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(status.render(found))
    return 0


def up(args: argparse.Namespace) -> int:
    data = Path(args.data).resolve()
    stack = Stack(data, log=lambda m: print(f"muster: {m}", file=sys.stderr, flush=True))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    url_file = data / VALKEY_URL_FILE
    try:
        auth = auth_env(args)
        url = stack.valkey(free_port())
        url_file.write_text(url + "\n")
        common = {
            "MUSTER_VALKEY_URL": url,
            "MUSTER_PREFIX_MODE": args.prefix_mode,
            "MUSTER_EXPOSE": args.expose,
            "MUSTER_LOG_JSON": "true" if args.json_logs else "false",
            **auth,
        }
        servers = Path(args.servers).resolve() if args.servers else DEMO_SERVERS
        if not args.servers:
            for cluster, port in DEMO_CLUSTERS:
                stack.python(f"mcp-kubernetes {cluster}", "demo.kubernetes", "--cluster", cluster, "--port", str(port))
            for cluster, port in DEMO_CLUSTERS:
                stack.wait_tcp(port, f"mcp-kubernetes {cluster}")
        elif not servers.is_dir():
            raise RuntimeError(f"--servers {servers} is not a folder")
        # Worker and discovery serve /metrics, /healthz and /readyz on ports of their own, free ones here.
        metrics = [("ingress", args.port)]
        port = free_port()
        metrics.append(("discovery", port))
        stack.python(
            "discovery",
            "services.discovery",
            env={**common, "MUSTER_SERVERS": str(servers), "MUSTER_DISCOVERY_METRICS_PORT": str(port)},
        )
        for n in range(args.workers):
            port = free_port()
            metrics.append((f"worker {n + 1}", port))
            stack.python(
                f"worker {n + 1}",
                "services.worker",
                env={
                    **common,
                    "MUSTER_WORKER_ID": f"worker-{n + 1}-{os.getpid()}",
                    "MUSTER_WORKER_METRICS_PORT": str(port),
                },
            )
        stack.python("ingress", "services.ingress", env={**common, "MUSTER_PORT": str(args.port)})
        stack.wait_http(f"http://127.0.0.1:{args.port}/readyz", "ingress")
        stack.log("metrics: " + ", ".join(f"{name} http://127.0.0.1:{port}/metrics" for name, port in metrics))
        stack.log(f"serving MCP at http://127.0.0.1:{args.port}/mcp ({servers}); `muster status` shows how it is doing")
        stack.log("Ctrl-C stops everything")
        while True:
            stack.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        stack.log("stopping")
        return 0
    except RuntimeError as exc:
        stack.log(f"error: {exc}")
        return 1
    finally:
        stack.stop()
        url_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "up":
        sys.exit(up(args))
    if args.command == "status":
        sys.exit(show_status(args))


if __name__ == "__main__":
    main()
