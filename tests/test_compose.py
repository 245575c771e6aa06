"""compose.yaml and the Dockerfile, checked without a Docker engine (none runs on this machine or in CI)."""

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from muster.container import MODULES, command
from services.discovery.config import DiscoverySettings
from services.ingress.config import IngressSettings
from services.worker.config import WorkerSettings
from shared.mcpserver import load_yaml, parse
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
MUSTER_SERVICES = {"ingress", "worker", "discovery", "gazelle", "graveler"}
PINNED = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+[\w.-]*|@sha256:[0-9a-f]{64})$")
SETTINGS: dict[str, type[ServiceSettings]] = {
    "MUSTER_INGRESS_": IngressSettings,
    "MUSTER_WORKER_": WorkerSettings,
    "MUSTER_DISCOVERY_": DiscoverySettings,
}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, with no variable set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_runs_valkey_the_ingress_two_workers_discovery_and_the_demo_clusters() -> None:
    services = compose()["services"]
    assert set(services) == {"valkey", *MUSTER_SERVICES}
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in MUSTER_SERVICES:
        service = services[name]
        assert service["image"] == "muster:0.1.0" and service["build"] == "."
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
        command(service["command"])  # the image's entrypoint knows it
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in ("ingress", "worker", "discovery"):
        assert services[name]["depends_on"] == {"valkey": {"condition": "service_healthy"}}


def test_valkey_is_pinned_password_protected_and_append_only_and_the_services_share_its_password() -> None:
    services = compose()["services"]
    valkey = services["valkey"]
    assert PINNED.match(valkey["image"]), valkey["image"]
    started = " ".join(valkey["command"])
    assert "--requirepass" in started and "--appendonly yes" in started
    assert valkey["volumes"] == ["valkey-data:/data"] and "valkey-data" in compose()["volumes"]
    assert "ping" in " ".join(valkey["healthcheck"]["test"])
    password = interpolate(valkey["environment"]["VALKEY_PASSWORD"])
    for name in ("ingress", "worker", "discovery"):
        env = services[name]["environment"]
        assert urlsplit(env["MUSTER_VALKEY_URL"]).hostname == "valkey"
        assert interpolate(env["MUSTER_VALKEY_PASSWORD"]) == password


def test_the_ingress_is_published_on_loopback_at_the_readme_port() -> None:
    ingress = compose()["services"]["ingress"]
    assert ingress["ports"] == ["127.0.0.1:8090:8090"]
    assert (
        ingress["environment"]["MUSTER_PORT"] == "8090" and ingress["environment"]["MUSTER_INGRESS_HOST"] == "0.0.0.0"
    )
    assert "/readyz" in " ".join(ingress["healthcheck"]["test"])


def test_discovery_reads_the_mounted_folder_whose_servers_are_the_demo_services() -> None:
    services = compose()["services"]
    discovery = services["discovery"]
    assert discovery["environment"]["MUSTER_DISCOVERY_SOURCE"] == "folder"
    folder = discovery["environment"]["MUSTER_SERVERS"]
    assert f"./compose/servers:{folder}:ro" in discovery["volumes"]
    listening = {
        name: int(services[name]["command"][services[name]["command"].index("--port") + 1])
        for name in ("gazelle", "graveler")
    }
    urls = {}
    for path in sorted((ROOT / "compose" / "servers").glob("*.yaml")):
        for document in load_yaml(path.read_text()):
            server = parse(document)
            assert server.spec.url is not None
            urls[server.name] = urlsplit(server.spec.url)
    assert {(u.hostname, u.port) for u in urls.values()} == set(listening.items())


def test_every_service_setting_in_compose_is_one_the_service_reads() -> None:
    for service in compose()["services"].values():
        for name in service.get("environment", {}):
            for prefix, model in SETTINGS.items():
                if name.startswith(prefix):
                    assert name[len(prefix) :].lower() in model.model_fields, f"{name} is read by no setting"


def dockerfile() -> list[tuple[str, str]]:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    return [(i.split(maxsplit=1)[0].upper(), i.split(maxsplit=1)[1]) for i in instructions]


def test_the_image_is_built_on_a_pinned_base_that_satisfies_the_projects_python() -> None:
    bases = [arg.split()[0] for op, arg in dockerfile() if op == "FROM"]
    assert bases and all(PINNED.match(base) for base in bases), bases
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in requires.removeprefix(">=").split("."))
    for base in bases:
        version = re.search(r":(\d+)\.(\d+)\.\d+", base)
        assert version is not None and (int(version[1]), int(version[2])) >= minimum


def test_the_image_runs_as_a_non_root_user_and_its_command_picks_the_service() -> None:
    steps = dockerfile()
    final = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    users = [arg for op, arg in steps[final:] if op == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid lets Kubernetes check runAsNonRoot"
    assert f"--uid {uid}" in " ".join(arg for op, arg in steps[final:] if op == "RUN")
    entrypoint = next(arg for op, arg in steps if op == "ENTRYPOINT")
    assert entrypoint == '["python", "-m", "muster.container"]'
    default = yaml.safe_load(next(arg for op, arg in steps if op == "CMD"))
    assert default[0] in MODULES


def test_everything_the_image_copies_exists_and_the_build_context_leaves_the_rest_out() -> None:
    for op, arg in dockerfile():
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), source
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".cache", "tests"} <= ignored
