"""k8s/components/valkey-sentinel: Valkey with two replicas and a Sentinel beside each node.

The manifests are built and validated as the rest of k8s/ is; the pods' two scripts are run here as the pods run
them (a POSIX shell, valkey-server and valkey-cli), three nodes and three Sentinels on 127.0.0.1: a fresh group
starts with the first node as primary, the primary is SIGKILLed and the Sentinels promote a replica, and the old
primary started again rejoins as a replica of the new one instead of splitting the group.
"""

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # it ships neither types nor a py.typed marker
import pytest
import redis
import yaml

from muster.stack import Child, Stack, free_port, valkey_binary
from shared import sentinel
from tests.k8s.test_manifests import K8S, KUBERNETES_VERSION, build, by_kind

COMPONENT = K8S / "components" / "valkey-sentinel"
PASSWORD = "s3cret-for-the-test"


def with_sentinel(tmp_path: Path) -> list[dict[str, Any]]:
    k8s = os.path.relpath(K8S, tmp_path)  # kustomize takes relative paths only
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [k8s], "components": [f"{k8s}/components/valkey-sentinel"]})
    )
    return build(str(tmp_path))


def test_the_sentinel_component_builds_valid_manifests_that_point_muster_at_the_sentinels(tmp_path: Path) -> None:
    docs = with_sentinel(tmp_path)
    for doc in docs:
        with contextlib.suppress(kubernetes_validate.SchemaNotFoundError):  # MCPServer, KEDA's kinds
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    url = by_kind(docs, "ConfigMap")["muster-config"]["data"]["MUSTER_VALKEY_URL"]
    address = sentinel.parse(url)
    assert address.is_sentinel and address.primary_name == "muster"
    assert address.sentinels == (("muster-valkey-sentinel", 26379),)
    valkey = by_kind(docs, "StatefulSet")["muster-valkey"]
    assert valkey["spec"]["replicas"] == 3 and valkey["spec"]["serviceName"] == "muster-valkey-pods"
    pod = valkey["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["valkey", "sentinel"]
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["readinessProbe"] and container["livenessProbe"] and container["resources"]
    services = by_kind(docs, "Service")
    assert services["muster-valkey-pods"]["spec"]["clusterIP"] == "None"
    assert services["muster-valkey-pods"]["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in services["muster-valkey-sentinel"]["spec"]["ports"]] == [26379]
    policies = by_kind(docs, "NetworkPolicy")
    for name in ("muster-ingress", "muster-worker", "muster-discovery"):
        ports = {p["port"] for rule in policies[name]["spec"]["egress"] for p in rule.get("ports", [])}
        assert {6379, 26379} <= ports, name
    valkey_in = {p["port"] for rule in policies["muster-valkey"]["spec"]["ingress"] for p in rule["ports"]}
    valkey_out = {p["port"] for rule in policies["muster-valkey"]["spec"]["egress"] for p in rule["ports"]}
    assert valkey_in == {6379, 26379} and {6379, 26379, 53} <= valkey_out


class Group:
    """Three pods' worth of the component's scripts on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.stack = Stack(root, log=lambda m: None)
        self.root = root
        self.ports = [free_port() for _ in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.shell = shutil.which("sh") or "/bin/sh"
        binaries = str(Path(valkey_binary()).parent)
        self.env = {
            "PATH": f"{binaries}:{os.environ['PATH']}",
            "SENTINELS": " ".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
            "SELF": "127.0.0.1",
            "FIRST": "127.0.0.1",
            "FIRST_PORT": str(self.ports[0]),
            "VALKEY_PASSWORD": PASSWORD,
            "QUORUM": "2",
            "DOWN_AFTER_MS": "1000",
            "FAILOVER_TIMEOUT_MS": "3000",  # a split vote is tried again after 6 s
            "WAIT_SECONDS": "20",
        }

    def node(self, n: int) -> Child:
        data = self.root / f"data-{n}"
        data.mkdir(exist_ok=True)
        env = {**self.env, "VALKEY_PORT": str(self.ports[n]), "VALKEY_DATA": str(data)}
        argv = [self.shell, str(COMPONENT / "valkey.sh"), "--bind", "127.0.0.1", "--repl-diskless-sync-delay", "0"]
        child = self.stack.start(f"valkey {n}", argv, env, quiet=True)
        self.stack.wait_tcp(self.ports[n], f"valkey {n}")
        return child

    def sentinel(self, n: int) -> Child:
        folder = self.root / f"sentinel-{n}"
        folder.mkdir(exist_ok=True)
        env = {**self.env, "VALKEY_PORT": str(self.ports[n]), "SENTINEL_PORT": str(self.sentinel_ports[n]),
               "SENTINEL_DIR": str(folder)}  # fmt: skip
        child = self.stack.start(f"sentinel {n}", [self.shell, str(COMPONENT / "sentinel.sh")], env, quiet=True)
        self.stack.wait_tcp(self.sentinel_ports[n], f"sentinel {n}")
        return child

    def ask(self, port: int, *command: str, password: str | None = PASSWORD) -> Any:
        with redis.Redis(port=port, password=password, socket_timeout=2) as client:
            return client.execute_command(*command)

    def role(self, n: int) -> tuple[str, int | None]:
        reply = self.ask(self.ports[n], "ROLE")
        if reply[0] == b"master":
            return "primary", None
        return "replica", int(reply[2])

    def named_primary(self, sentinel_index: int) -> int:
        reply = self.ask(self.sentinel_ports[sentinel_index], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "muster",
                         password=None)  # fmt: skip
        return int(reply[1]) if reply else 0

    def until(self, condition: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if condition():
                    return
            except (redis.RedisError, OSError):
                pass
            assert time.monotonic() < deadline, f"{what}: not within {seconds:g} s"
            time.sleep(0.2)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    g = Group(tmp_path)
    try:
        yield g
    finally:
        g.stack.stop()


def test_the_pods_scripts_start_a_group_fail_it_over_and_bring_the_old_primary_back_as_a_replica(group: Group) -> None:
    first = group.node(0)
    group.sentinel(0)
    for n in (1, 2):  # as the StatefulSet starts them: in order, after the first is ready
        group.node(n)
        group.sentinel(n)
    assert group.role(0) == ("primary", None)
    p0 = group.ports[0]
    group.until(lambda: group.role(1) == group.role(2) == ("replica", p0), 20, "both replicas follow the first node")
    group.until(
        lambda: all(len(group.ask(p, "SENTINEL", "SENTINELS", "muster", password=None)) == 2
                    for p in group.sentinel_ports),
        30,
        "the Sentinels know each other",
    )  # fmt: skip

    group.stack.stop_child(first, signal.SIGKILL)
    group.until(lambda: group.named_primary(1) in group.ports[1:], 45, "a replica promoted")
    promoted = group.named_primary(1)
    assert group.named_primary(2) in (promoted, p0)
    group.until(lambda: group.role(group.ports.index(promoted)) == ("primary", None), 10, "the promoted node leads")

    group.node(0)  # the old primary's pod starts again: it asks the Sentinels first
    group.until(lambda: group.role(0) == ("replica", promoted), 20, "the old primary rejoins as a replica")
    client = redis.Redis(port=promoted, password=PASSWORD, socket_timeout=2)
    try:
        client.set("written-after-the-failover", "yes")
        group.until(lambda: group.ask(group.ports[0], "GET", "written-after-the-failover") == b"yes", 10, "replication")
    finally:
        client.close()
