"""A Valkey primary, a replica and a Sentinel (valkey-server in sentinel mode), each a process on 127.0.0.1, for the
tests that fail the primary over and watch muster follow."""

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from muster.stack import Child, Stack, free_port, valkey_binary

PRIMARY_NAME = "muster"


@dataclass
class Group:
    stack: Stack
    root: Path
    ports: list[int]  # the data nodes: the first starts as primary, the second as its replica
    sentinel_port: int

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{PRIMARY_NAME}"

    def ask(self, port: int, *command: str) -> Any:
        """One command to one node (or to the Sentinel), on a connection of its own."""
        with redis.Redis(port=port, socket_timeout=2) as client:
            return client.execute_command(*command)

    def primary_port(self) -> int:
        return int(self.ask(self.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", PRIMARY_NAME)[1])

    def role(self, port: int) -> bytes:
        role: bytes = self.ask(port, "ROLE")[0]
        return role

    def node(self, port: int) -> Child:
        return next(c for c in self.stack.children if c.name == f"valkey {port}")

    def wait_replica_known(self, timeout: float = 20.0) -> None:
        """Until the Sentinel knows the replica (it learns of it from the primary's INFO) and the replica is in sync:
        a failover before that has nobody to promote."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replicas = self.ask(self.sentinel_port, "SENTINEL", "REPLICAS", PRIMARY_NAME)
            # each replica as a dict of its fields
            if replicas and all(r.get(b"master-link-status") == b"ok" for r in replicas):
                return
            time.sleep(0.2)
        raise AssertionError("the Sentinel never learnt of the replica")

    def wait_primary(self, port: int, timeout: float = 30.0) -> None:
        """Until the Sentinel names `port` the primary and that node says so itself."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if self.primary_port() == port and self.role(port) == b"master":
                    return
            time.sleep(0.1)
        raise AssertionError(f"valkey {port} did not become the primary within {timeout:g} s")


def start_group(root: Path) -> Iterator[Group]:
    stack = Stack(root, log=lambda m: print(m, file=sys.stderr))
    ports = [free_port(), free_port()]
    sentinel_port = free_port()
    try:
        for n, port in enumerate(ports):
            folder = root / f"valkey-{port}"
            folder.mkdir()
            replica = ["--replicaof", "127.0.0.1", str(ports[0])] if n else []
            argv = [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                    "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--loglevel", "warning",
                    "--repl-diskless-sync-delay", "0", *replica]  # fmt: skip
            stack.start(f"valkey {port}", argv, quiet=True)
            stack.wait_tcp(port, f"valkey {port}")
        config = root / "sentinel.conf"
        config.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndir {root}\nloglevel warning\n"
            f"sentinel monitor {PRIMARY_NAME} 127.0.0.1 {ports[0]} 1\n"
            f"sentinel down-after-milliseconds {PRIMARY_NAME} 1000\n"
            f"sentinel failover-timeout {PRIMARY_NAME} 4000\n"
        )
        stack.start("sentinel", [valkey_binary(), str(config), "--sentinel"], quiet=True)
        stack.wait_tcp(sentinel_port, "sentinel")
        group = Group(stack, root, ports, sentinel_port)
        group.wait_replica_known()
        yield group
    finally:
        stack.stop()
