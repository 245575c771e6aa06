"""The start scripts of k8s/components/valkey-sentinel, as kustomize builds them into their ConfigMap, run against
real valkey-server processes on 127.0.0.1: three data nodes and three Sentinels come up as one primary, two
replicas and a quorum; a SIGKILLed primary is failed over; the old primary restarted by its script comes back as a
replica of the new one, never as a second primary; and muster's own client finds the primary through the Sentinels.
In the cluster the nodes tell each other apart by the pods' DNS names; here by their ports (SELF, SEED and
SENTINELS are the scripts' inputs either way)."""

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from muster.stack import Child, Stack, free_port, valkey_binary
from shared.valkey import connect
from tests.k8s.test_manifests import by_kind, with_component

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-for-the-test"
DOWN_AFTER_MS = 1000  # the Sentinels' patience with a silent primary (5000 in the cluster): a fast test


@dataclass
class Group:
    stack: Stack
    root: Path
    scripts: Path
    env: dict[str, str]
    data: list[int]
    sentinels: list[int]
    nodes: list[Child]

    def node(self, n: int) -> Child:
        folder = self.root / f"data-{n}"
        folder.mkdir(exist_ok=True)
        env = {**self.env, "VALKEY_PORT": str(self.data[n]), "DATA_DIR": str(folder)}
        log = self.root / f"valkey-{n}.log"
        child = self.stack.start(f"valkey {n}", ["sh", str(self.scripts / "valkey.sh")], env, stderr=log, quiet=True)
        self.stack.wait_tcp(self.data[n], f"valkey {n}")
        return child

    def sentinel(self, n: int) -> Child:
        folder = self.root / f"conf-{n}"
        folder.mkdir(exist_ok=True)
        env = {**self.env, "SENTINEL_PORT": str(self.sentinels[n]), "CONF_DIR": str(folder)}
        argv = ["sh", str(self.scripts / "sentinel.sh")]
        child = self.stack.start(f"sentinel {n}", argv, env, stderr=self.root / f"sentinel-{n}.log", quiet=True)
        self.stack.wait_tcp(self.sentinels[n], f"sentinel {n}")
        return child

    def ask(self, port: int, *command: str, password: str | None = PASSWORD) -> Any:
        with redis.Redis(port=port, password=password, socket_timeout=2, decode_responses=True) as client:
            return client.execute_command(*command)

    def role(self, n: int) -> tuple[str, int | None]:
        """The node's role, and for a replica the port of its primary."""
        answer = self.ask(self.data[n], "ROLE")
        return (answer[0], None) if answer[0] == "master" else (answer[0], int(answer[2]))

    def named(self, sentinel: int = 0) -> int:
        """The port of the primary a Sentinel names."""
        return int(
            self.ask(self.sentinels[sentinel], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "muster", password=None)[1]
        )

    def url(self) -> str:
        return f"redis+sentinel://:{PASSWORD}@" + ",".join(f"127.0.0.1:{p}" for p in self.sentinels) + "/muster/0"


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError, IndexError, TypeError, ValueError):
            if condition():
                return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds:g} s: {what}")


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    (tmp_path / "build").mkdir()
    docs = with_component(tmp_path / "build", "valkey-sentinel")
    maps = by_kind(docs, "ConfigMap")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name, text in next(m for n, m in maps.items() if n.startswith("muster-valkey-scripts-"))["data"].items():
        (scripts / name).write_text(text)
    settings = next(m for n, m in maps.items() if n.startswith("muster-valkey-sentinel-"))["data"]
    bin_dir = os.path.dirname(valkey_binary())
    assert os.access(os.path.join(bin_dir, "valkey-cli"), os.X_OK), "valkey-cli beside valkey-server"
    data, sentinels = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PRIMARY_NAME": settings["PRIMARY_NAME"],
        "MAXMEMORY": settings["MAXMEMORY"],
        "SELF": "127.0.0.1",
        "SEED": f"127.0.0.1 {data[0]}",
        "SENTINELS": " ".join(f"127.0.0.1:{p}" for p in sentinels),
        "VALKEY_PASSWORD": PASSWORD,
        "VALKEY_BIND": "127.0.0.1",
        "DOWN_AFTER_MS": str(DOWN_AFTER_MS),
    }
    stack = Stack(tmp_path, log=lambda m: print(m, file=sys.stderr))
    g = Group(stack, tmp_path, scripts, env, data, sentinels, [])
    try:
        g.nodes = [g.node(n) for n in range(3)]  # in the StatefulSet's order, pod 0 first
        for n in range(3):
            g.sentinel(n)
        yield g
    finally:
        stack.stop()


def said(group: Group, n: int) -> str:
    """What node n's start script said last (its log keeps every start)."""
    return [line for line in (group.root / f"valkey-{n}.log").read_text().splitlines() if line.startswith("valkey:")][
        -1
    ]


def test_the_scripts_make_a_group_that_fails_over_and_takes_an_old_primary_back_as_a_replica(group: Group) -> None:
    g = group
    seed, one, two = g.data
    assert said(g, 0) == "valkey: starting as the primary"
    assert said(g, 1) == said(g, 2) == f"valkey: starting as a replica of 127.0.0.1 {seed}"
    assert [g.role(n) for n in range(3)] == [("master", None), ("slave", seed), ("slave", seed)]
    assert g.ask(seed, "CONFIG", "GET", "maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert int(g.ask(seed, "CONFIG", "GET", "maxmemory")["maxmemory"]) == 768 * 2**20
    # Every Sentinel knows the other two and both replicas: a failover has its quorum and someone to promote.
    until(lambda: all(len(g.ask(p, "SENTINEL", "SENTINELS", "muster", password=None)) == 2 for p in g.sentinels), 20,
          "the Sentinels know each other")  # fmt: skip
    until(lambda: all(len(g.ask(p, "SENTINEL", "REPLICAS", "muster", password=None)) == 2 for p in g.sentinels), 20,
          "the Sentinels know both replicas")  # fmt: skip
    assert {g.named(n) for n in range(3)} == {seed}
    g.ask(seed, "SET", "muster:test", "before the failover")
    g.ask(seed, "WAIT", "2", "2000")

    killed = time.monotonic()
    g.stack.stop_child(g.nodes[0], signal.SIGKILL)
    until(lambda: g.named() != seed and g.role(g.data.index(g.named()))[0] == "master", 20, "a replica promoted")
    failover = time.monotonic() - killed
    promoted = g.named()
    assert promoted in (one, two) and {g.named(n) for n in range(3)} == {promoted}
    assert g.ask(promoted, "GET", "muster:test") == "before the failover"

    g.nodes[0] = g.node(0)  # the old primary's pod restarts, its data kept: it must not lead again
    assert said(g, 0) == f"valkey: starting as a replica of 127.0.0.1 {promoted}"
    until(lambda: g.role(0) == ("slave", promoted), 10, "the old primary follows the new one")
    until(lambda: g.ask(promoted, "WAIT", "2", "1000") == 2, 20, "both replicas in sync with the new primary")
    assert [g.role(n)[0] for n in range(3)].count("master") == 1

    async def through_muster() -> Any:
        client = connect(g.url(), name="test-valkey-sentinel")
        try:
            return await client.get("muster:test")
        finally:
            await client.aclose()

    assert asyncio.run(through_muster()) in (b"before the failover", "before the failover")
    print(f"failed over {failover:.1f} s after the primary's SIGKILL (down-after {DOWN_AFTER_MS} ms)")
