"""`muster up`: Valkey (or an existing one), the demo upstreams, discovery, workers and the ingress, supervised.

Everything is checked before anything starts: each option and variable (one line naming the bad one), the
services' own settings, and the ports (a taken port is an error, not a second stack answering in our place).
Once serving, a child that exits is started again (muster/supervise.py); the first Ctrl-C (or SIGTERM) stops
the stack in order, the ingress draining its calls first; a second one kills what still runs, at once.
"""

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

from muster.options import (
    Option,
    boolean,
    choice,
    fail,
    folder,
    integer,
    memory,
    path,
    port,
    port_or_free,
    resolve,
    valkey_url,
)
from muster.stack import PORTS, Child, Stack, Stopping, free_port, port_in_use, port_range
from muster.supervise import CrashLoop, Supervisor
from services.discovery.config import DiscoverySettings
from services.ingress.config import IngressSettings, connection_bound, open_file_limit
from services.ingress.oauth.config import OAuthSettings
from services.worker.config import WorkerIdentitySettings, WorkerSettings
from shared.settings import problems

PROG = "muster up"
DEMO_SERVERS = Path(__file__).resolve().parent.parent / "demo" / "servers"
DEMO_CLUSTERS = ("gazelle", "graveler")  # on DEMO_PORT and the next, as demo/servers/ says
DEMO_PORT = 8101
STATE_FILE = "muster.json"  # in the data folder while the stack serves: what `muster dlq` needs to find it
VALKEY_URL_FILE = "valkey.url"  # in the data folder while the stack serves its own Valkey: for `muster status`
EXIT_INTERRUPTED = 130
STOP_MARGIN = 5.0  # seconds a service gets past its own drain period before it is killed

OPTIONS = (
    Option("--servers", "MUSTER_SERVERS", folder, "", "folder of MCPServer YAML files (default: the demo)", "DIR"),
    Option("--prefix-mode", "MUSTER_PREFIX_MODE", choice("always", "conditional", "never"), "always",
           "how tool and prompt names are prefixed: always, conditional or never"),
    Option("--expose", "MUSTER_EXPOSE", choice("direct", "meta"), "direct",
           "the aggregated tool list (direct), or muster's meta-tools (meta)"),
    Option("--port", "MUSTER_PORT", port, "8090", "the ingress's port", "N"),
    Option("--workers", "MUSTER_WORKERS", integer(1, 64), "2", "worker processes", "N"),
    Option("--auth", "MUSTER_AUTH", choice("none", "oidc"), "none",
           "oidc: users sign in through muster at an OIDC provider (MUSTER_OIDC_ISSUER, MUSTER_OIDC_CLIENT_ID, "
           "MUSTER_OIDC_CLIENT_SECRET, MUSTER_ENCRYPTION_KEY, MUSTER_REGISTRATION_TOKEN, MUSTER_PUBLIC_URL)"),
    Option("--data", "MUSTER_DATA", path, ".muster", "data folder for Valkey's files", "DIR"),
    Option("--json-logs", "MUSTER_LOG_JSON", boolean, "false", "log JSON lines instead of text", switch=True),
    Option("--valkey", "MUSTER_VALKEY_URL", valkey_url, "",
           "use this Valkey (redis://host:port/db or redis+sentinel://host:port,.../primary) instead of starting one",
           "URL"),
    Option("--valkey-port", "MUSTER_VALKEY_PORT", port_or_free, "0", "the started Valkey's port (0: a free one)", "N"),
    Option("--valkey-maxmemory", "MUSTER_VALKEY_MAXMEMORY", memory, "1gb",
           "the started Valkey's memory limit; full, it refuses writes (noeviction) and calls get -32006 with a retry"
           " hint, rather than queued calls being evicted silently", "SIZE"),
    Option("--demo-port", "MUSTER_DEMO_PORT", integer(1, 65534), str(DEMO_PORT),
           "the first demo cluster's port; the second one gets the next", "N"),
)  # fmt: skip


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("up", help="run ingress, workers, discovery and an embedded Valkey (and the demo)")
    parser.prog = PROG
    for option in OPTIONS:
        option.add_to(parser)


class Shutdown:
    """SIGINT and SIGTERM: the first asks the stack to stop in order, the second kills it at once."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.signals = 0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self.stack.stopping = True
        if self.signals == 1:
            return
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.stack.kill()


def run(args: argparse.Namespace) -> int:
    o = resolve(OPTIONS, args, PROG)
    settings = _check_settings(o)
    _check_ports(o, settings[0])
    data: Path = o["data"]
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(PROG, f"--data {data}: cannot create the folder: {exc.strerror}")
    stack = Stack(data, log=_log, own_groups=True)
    shutdown = Shutdown(stack)
    shutdown.install()
    try:
        code = _serve(stack, o, settings)
    finally:
        stack.stop()
        _remove_state(data)
    if shutdown.signals > 1:
        _log("stopped at once")
        return EXIT_INTERRUPTED
    return code


def _serve(stack: Stack, o: dict[str, Any], settings: tuple[IngressSettings, WorkerSettings, DiscoverySettings]) -> int:
    try:
        url, metrics = _start(stack, o, settings)
        _write_state(stack.data, url if not o["valkey"] else None, o["port"])
        servers = o["servers"] or "the demo"
        _log("metrics: " + ", ".join(f"{name} http://127.0.0.1:{port}/metrics" for name, port in metrics))
        _log(f"serving MCP at http://127.0.0.1:{o['port']}/mcp ({servers}); `muster status` shows how it is doing")
        _log("Ctrl-C stops everything")
        supervisor = Supervisor(stack, log=_log, renew=_renew)
        while not stack.stopping:
            supervisor.poll()
            time.sleep(0.2)
    except Stopping:
        pass
    except (CrashLoop, RuntimeError) as exc:
        _log(f"error: {exc}")
        return 1
    _log("stopping")
    return 0


def _log(message: str) -> None:
    print(f"muster: {message}", file=sys.stderr, flush=True)


def _check_settings(o: dict[str, Any]) -> tuple[IngressSettings, WorkerSettings, DiscoverySettings]:
    """The services read the rest of their settings from the environment: checked here, before anything starts."""
    url = o["valkey"] or "redis://127.0.0.1:6379/0"
    ingress = _settings(IngressSettings, valkey_url=url, port=o["port"], expose=o["expose"], auth=o["auth"])
    worker = _settings(WorkerSettings, valkey_url=url, auth=o["auth"])
    if o["auth"] == "oidc":  # the sign-in's own settings (MUSTER_OIDC_*, the secrets), read by ingress and workers
        _settings(OAuthSettings, valkey_url=url, public_url=_public_url(o))
        _settings(WorkerIdentitySettings, valkey_url=url, public_url=_public_url(o))
    if os.environ.get(PORTS):  # where free ports are looked for (metrics, the embedded Valkey)
        try:
            port_range(os.environ[PORTS])
        except SystemExit as exc:  # port_range's one line, said as muster up says every other
            fail(PROG, str(exc))
    try:
        connection_bound(ingress.max_connections, open_file_limit())  # checked as the ingress will check it
    except ValueError as exc:
        fail(PROG, str(exc))
    servers = o["servers"] or DEMO_SERVERS
    discovery = _settings(DiscoverySettings, valkey_url=url, servers=servers, prefix_mode=o["prefix_mode"])
    return ingress, worker, discovery


def _public_url(o: dict[str, Any]) -> str:
    """What clients reach muster at: MUSTER_PUBLIC_URL, else the ingress on this machine."""
    return os.environ.get("MUSTER_PUBLIC_URL") or f"http://127.0.0.1:{o['port']}"


S = TypeVar("S", bound=BaseSettings)


def _settings(cls: type[S], **values: Any) -> S:
    try:
        return cls(**values)
    except (ValidationError, SettingsError) as exc:
        lines = problems(cls, exc)
        for line in lines[:-1]:
            print(f"{PROG}: {line}", file=sys.stderr)
        fail(PROG, lines[-1])


def _check_ports(o: dict[str, Any], ingress: IngressSettings) -> None:
    wanted = [(ingress.host, o["port"], f"--port {o['port']}")]
    if not o["servers"]:
        demo = o["demo_port"]
        wanted += [("127.0.0.1", demo + n, f"--demo-port {demo}") for n in range(len(DEMO_CLUSTERS))]
    if not o["valkey"] and o["valkey_port"]:
        wanted.append(("127.0.0.1", o["valkey_port"], f"--valkey-port {o['valkey_port']}"))
    for host, number, where in wanted:
        if port_in_use(host, number):
            fail(PROG, f"{where}: {host}:{number} is already in use (is another muster up running?)")


def _start(
    stack: Stack, o: dict[str, Any], settings: tuple[IngressSettings, WorkerSettings, DiscoverySettings]
) -> tuple[str, list[tuple[str, int]]]:
    """Starts the stack; returns Valkey's URL and where each part serves its metrics."""
    ingress, worker, _ = settings
    url: str = o["valkey"] or stack.valkey(o["valkey_port"] or free_port(), maxmemory=o["valkey_maxmemory"])
    log_json = "true" if o["json_logs"] else "false"
    # Each service is given its own name for what muster up decides: a service reads its own name first.
    common = {"VALKEY_URL": url, "LOG_JSON": log_json}
    # The sign-in's settings (shared/identity/settings.py) have no service prefix: ingress and workers read these.
    sign_in = {"MUSTER_PUBLIC_URL": _public_url(o), "MUSTER_VALKEY_URL": url} if o["auth"] == "oidc" else {}
    servers = o["servers"] or _demo_servers(stack.data, o["demo_port"])
    if not o["servers"]:
        for n, cluster in enumerate(DEMO_CLUSTERS):
            stack.python(f"mcp-kubernetes {cluster}", "demo.kubernetes", "--cluster", cluster,
                         "--port", str(o["demo_port"] + n), group="upstreams")  # fmt: skip
        for n, cluster in enumerate(DEMO_CLUSTERS):
            stack.wait_tcp(o["demo_port"] + n, f"mcp-kubernetes {cluster}")
    # Worker and discovery serve /metrics, /healthz and /readyz on ports of their own, free ones here (a restarted
    # child keeps its port).
    metrics = [("ingress", o["port"]), ("discovery", free_port())]
    own = {f"MUSTER_DISCOVERY_{k}": v for k, v in common.items()}
    env = {**own, "MUSTER_DISCOVERY_SERVERS": str(servers), "MUSTER_DISCOVERY_PREFIX_MODE": o["prefix_mode"]}
    stack.python("discovery", "services.discovery", env={**env, "MUSTER_DISCOVERY_METRICS_PORT": str(metrics[1][1])})
    for n in range(o["workers"]):
        metrics.append((f"worker {n + 1}", free_port()))
        own = {f"MUSTER_WORKER_{k}": v for k, v in {**common, "AUTH": o["auth"]}.items()}
        env = {**own, **sign_in, "MUSTER_WORKER_ID": _worker_id(n + 1, 0)}
        env["MUSTER_WORKER_METRICS_PORT"] = str(metrics[-1][1])
        stack.python(f"worker {n + 1}", "services.worker", env=env,
                     group="workers", stop_timeout=worker.drain_seconds + STOP_MARGIN)  # fmt: skip
    own = {f"MUSTER_INGRESS_{k}": v for k, v in {**common, "AUTH": o["auth"]}.items()}
    env = {**own, **sign_in, "MUSTER_INGRESS_PORT": str(o["port"]), "MUSTER_INGRESS_EXPOSE": o["expose"]}
    stack.python("ingress", "services.ingress", env=env, stop_timeout=ingress.drain_seconds + STOP_MARGIN)
    stack.wait_http(f"http://127.0.0.1:{o['port']}/readyz", "ingress")
    return url, metrics


def _demo_servers(data: Path, first_port: int) -> Path:
    """The demo's MCPServer files, pointing at the ports its clusters run on."""
    if first_port == DEMO_PORT:
        return DEMO_SERVERS
    folder = data / "demo-servers"
    folder.mkdir(exist_ok=True)
    for n, cluster in enumerate(DEMO_CLUSTERS):
        text = (DEMO_SERVERS / f"{cluster}.yaml").read_text()
        (folder / f"{cluster}.yaml").write_text(text.replace(f":{DEMO_PORT + n}/", f":{first_port + n}/"))
    return folder


def _worker_id(n: int, incarnation: int) -> str:
    # A new consumer name for each incarnation: the dead one's calls are reclaimed as a dead worker's, never
    # mistaken by its successor for calls of its own.
    return f"worker-{n}-{os.getpid()}" + (f"-{incarnation}" if incarnation else "")


def _renew(child: Child, restarts: int) -> dict[str, str]:
    if not child.name.startswith("worker "):
        return {}
    return {"MUSTER_WORKER_ID": _worker_id(int(child.name.split()[1]), restarts)}


def _write_state(data: Path, url: str | None, ingress_port: int) -> None:
    state = {"pid": os.getpid(), "valkey_url": url, "mcp": f"http://127.0.0.1:{ingress_port}/mcp"}
    temporary = data / f".{STATE_FILE}.{os.getpid()}"
    temporary.write_bytes(orjson.dumps(state))
    temporary.replace(data / STATE_FILE)
    if url is not None:
        (data / VALKEY_URL_FILE).write_text(url + "\n")


def read_state(data: Path) -> dict[str, Any] | None:
    """What a running `muster up` with this data folder wrote about itself; None when none runs there."""
    try:
        state: dict[str, Any] = orjson.loads((data / STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return state


def _remove_state(data: Path) -> None:
    state = read_state(data)
    if state is not None and state.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            (data / STATE_FILE).unlink()
            if state.get("valkey_url"):
                (data / VALKEY_URL_FILE).unlink(missing_ok=True)
