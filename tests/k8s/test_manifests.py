"""k8s/ builds with kubectl kustomize, and what it builds is valid and holds the deployment's rules.

Validation is offline: the built-in kinds against the Kubernetes OpenAPI schemas (kubernetes-validate), every
MCPServer (ours, the demo's, the Go muster's own examples) against our CRD's openAPIV3Schema, and what the
status writer renders against the CRD's status schema.
"""

import os
import shutil
import subprocess
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # it ships neither types nor a py.typed marker
import pytest
import yaml

from muster.container import command
from services.discovery.config import DiscoverySettings
from services.discovery.status import ServerStatus, render
from services.ingress.config import IngressSettings
from services.worker.config import WorkerSettings
from shared import streams
from shared.mcpserver import load_yaml, parse
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.32"  # the oldest minor a management cluster runs that these manifests target
REFERENCED_SECRETS = {
    "muster-oauth-credentials": {"dex-client-secret", "registration-token", "oauth-encryption-key"},
    "muster-valkey-auth": {"default"},
}
CUSTOM_KINDS = {"MCPServer", "ScaledObject", "TriggerAuthentication"}

Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl is not on PATH; the kustomize build cannot be checked"
        if os.environ.get("CI"):
            pytest.fail(message)  # a clean CI machine of this project's kind has kubectl: its absence is a fault
        pytest.skip(message)
    return found


@cache
def build(target: str) -> list[Doc]:
    out = subprocess.run([kubectl(), "kustomize", target], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def with_hpa(tmp_path: Path) -> list[Doc]:
    k8s = os.path.relpath(K8S, tmp_path)  # kustomize takes relative paths only
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [k8s], "components": [f"{k8s}/components/hpa"]})
    )
    return build(str(tmp_path))


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@cache
def crd_schema() -> Doc:
    crd = yaml.safe_load((K8S / "base" / "crd" / "mcpservers.muster.giantswarm.io.yaml").read_text())
    schema: Doc = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


def validate_mcpserver(doc: Doc) -> None:
    jsonschema.Draft202012Validator(crd_schema(), format_checker=FORMATS).validate(doc)


@pytest.mark.parametrize("target", ["k8s", "k8s/examples"])
def test_the_manifests_build_and_every_built_in_kind_is_valid_for_kubernetes(target: str) -> None:
    docs = build(str(ROOT / target))
    custom = set()
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            custom.add(doc["kind"])
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert custom <= CUSTOM_KINDS
    assert {
        d["metadata"].get("namespace") for d in docs if d["kind"] not in ("Namespace", "CustomResourceDefinition")
    } == {"muster"}


def test_the_hpa_component_replaces_keda_with_a_horizontal_pod_autoscaler(tmp_path: Path) -> None:
    docs = with_hpa(tmp_path)
    assert not by_kind(docs, "ScaledObject") and not by_kind(docs, "TriggerAuthentication")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["muster-worker"]
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "muster-worker"}


def test_every_pod_runs_as_non_root_on_a_read_only_root_with_probes_and_resource_bounds() -> None:
    docs = build(str(K8S))
    workloads = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    assert set(workloads) == {"muster-ingress", "muster-worker", "muster-discovery", "muster-valkey"}
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert set(container["resources"]) == {"requests", "limits"}, name
            assert container["readinessProbe"] and container["livenessProbe"], name
            if container["image"].startswith("muster"):
                assert container["image"] == "muster:0.1.0"
                assert command(container["args"])[2] == f"services.{name.removeprefix('muster-')}"
                probes = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
                assert probes == {"/readyz", "/healthz"}, name


def test_replicas_ingress_two_or_more_discovery_two_and_workers_left_to_the_autoscaler() -> None:
    deployments = by_kind(build(str(K8S)), "Deployment")
    assert deployments["muster-ingress"]["spec"]["replicas"] >= 2
    assert deployments["muster-discovery"]["spec"]["replicas"] == 2
    assert "replicas" not in deployments["muster-worker"]["spec"]
    budgets = by_kind(build(str(K8S)), "PodDisruptionBudget")
    assert set(budgets) == {"muster-ingress", "muster-worker", "muster-discovery"}


def _env(container: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_secrets_are_referenced_never_created_and_mounted_as_the_files_the_services_are_told_of() -> None:
    docs = build(str(K8S))
    assert not by_kind(docs, "Secret")
    for name, deployment in by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
        files = set()
        for volume in pod["volumes"]:
            if "secret" in volume:
                secret = volume["secret"]
                keys = {i["key"] for i in secret["items"]}
                assert keys <= REFERENCED_SECRETS[secret["secretName"]], name
                files |= {f"{mounts[volume['name']]}/{i['path']}" for i in secret["items"]}
        env = _env(pod["containers"][0])
        configured = {v for k, v in env.items() if k.endswith("_FILE")}
        configured.add(by_kind(docs, "ConfigMap")["muster-config"]["data"]["MUSTER_VALKEY_PASSWORD_FILE"])
        assert configured == files, name
    ingress = _env(by_kind(docs, "Deployment")["muster-ingress"]["spec"]["template"]["spec"]["containers"][0])
    assert ingress["MUSTER_OIDC_CLIENT_SECRET_FILE"].endswith("/dex-client-secret")
    assert ingress["MUSTER_REGISTRATION_TOKEN_FILE"].endswith("/registration-token")
    assert ingress["MUSTER_ENCRYPTION_KEY_FILE"].endswith("/oauth-encryption-key")
    valkey = by_kind(docs, "StatefulSet")["muster-valkey"]["spec"]["template"]["spec"]["containers"][0]
    assert _env(valkey)["VALKEY_PASSWORD"] == {"secretKeyRef": {"name": "muster-valkey-auth", "key": "default"}}
    assert "--appendonly" in valkey["args"] and valkey["args"][valkey["args"].index("--appendonly") + 1] == "yes"


def test_every_service_setting_in_the_manifests_is_one_the_service_reads() -> None:
    docs = build(str(K8S))
    names = set(by_kind(docs, "ConfigMap")["muster-config"]["data"])
    for deployment in by_kind(docs, "Deployment").values():
        names |= set(_env(deployment["spec"]["template"]["spec"]["containers"][0]))
    settings: dict[str, type[ServiceSettings]] = {
        "MUSTER_INGRESS_": IngressSettings,
        "MUSTER_WORKER_": WorkerSettings,
        "MUSTER_DISCOVERY_": DiscoverySettings,
    }
    for name in sorted(names):
        for prefix, model in settings.items():
            if name.startswith(prefix):
                fields = set(model.model_fields)
                aliases = {a for f in model.model_fields.values() for a in getattr(f.validation_alias, "choices", [])}
                assert name[len(prefix) :].lower() in fields or name in aliases, f"{name} is read by no setting"


def test_only_discovery_talks_to_the_api_and_only_as_far_as_it_must() -> None:
    docs = build(str(K8S / "examples"))
    accounts = by_kind(docs, "ServiceAccount")
    assert accounts["muster-ingress"]["automountServiceAccountToken"] is False
    assert accounts["muster-worker"]["automountServiceAccountToken"] is False
    bindings = by_kind(docs, "RoleBinding")
    assert [s["name"] for b in bindings.values() for s in b["subjects"]] == ["muster-discovery"]
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    rules = {
        (r["apiGroups"][0], r["resources"][0], tuple(r.get("resourceNames", ())), tuple(sorted(r["verbs"])))
        for r in by_kind(docs, "Role")["muster-discovery"]["rules"]
    }
    assert rules == {
        ("muster.giantswarm.io", "mcpservers", (), ("get", "list", "watch")),
        ("muster.giantswarm.io", "mcpservers/status", (), ("get", "patch", "update")),
        ("coordination.k8s.io", "leases", (), ("create",)),
        ("coordination.k8s.io", "leases", ("muster-discovery",), ("get", "update")),
        ("", "secrets", ("graveler-token-exchange",), ("get",)),
    }


def test_workers_scale_on_the_pending_entries_of_the_call_streams_discovery_creates() -> None:
    docs = build(str(K8S / "examples"))
    scaled = by_kind(docs, "ScaledObject")["muster-worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] in by_kind(docs, "Deployment")
    streams_triggers = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis-streams"]
    servers = {s["metadata"]["name"] for s in docs if s["kind"] == "MCPServer"}
    assert {t["metadata"]["stream"] for t in streams_triggers} == {streams.calls(name) for name in servers}
    for trigger in streams_triggers:
        assert trigger["metadata"]["consumerGroup"] == streams.GROUP_WORKERS
        assert int(trigger["metadata"]["pendingEntriesCount"]) > 0
        assert trigger["metadata"]["address"].startswith("muster-valkey.muster.svc:")
        assert trigger["authenticationRef"]["name"] in by_kind(docs, "TriggerAuthentication")
    secret = by_kind(docs, "TriggerAuthentication")["muster-valkey"]["spec"]["secretTargetRef"]
    assert secret == [{"parameter": "password", "name": "muster-valkey-auth", "key": "default"}]


def test_the_crd_keeps_the_go_musters_names_and_has_the_status_subresource_and_columns() -> None:
    crd = by_kind(build(str(K8S)), "CustomResourceDefinition")["mcpservers.muster.giantswarm.io"]
    assert crd["spec"]["names"]["shortNames"] == ["mcps"] and crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Status"] == ".status.state" and columns["Tools"] == ".status.toolCount"


def repo_mcpservers() -> list[Doc]:
    documents = []
    for path in [
        *sorted((ROOT / "demo" / "servers").glob("*.yaml")),
        *sorted((K8S / "examples").glob("mcpserver*.yaml")),
    ]:
        documents += load_yaml(path.read_text())
    documents += load_yaml((Path(__file__).parent / "go_muster_examples.yaml").read_text())
    return documents


@pytest.mark.parametrize("doc", repo_mcpservers(), ids=lambda d: d["metadata"]["name"])
def test_every_mcpserver_in_the_repo_and_of_the_go_muster_fits_our_crd_and_our_model(doc: Doc) -> None:
    validate_mcpserver(doc)
    assert parse(doc).name == doc["metadata"]["name"]


@pytest.mark.parametrize(
    "spec",
    [
        {"url": "https://x/mcp"},  # no type
        {"type": "websocket", "url": "https://x/mcp"},
        {"type": "streamable-http", "url": "ftp://x/mcp"},
        {"type": "streamable-http", "url": "https://x/mcp", "timeout": 301},
        {"type": "streamable-http", "url": "https://x/mcp", "toolPrefix": "1x"},
        {"type": "streamable-http", "url": "https://x/mcp", "family": {"name": "k"}},
    ],
)
def test_the_crd_schema_refuses_what_the_go_muster_refuses(spec: Doc) -> None:
    doc = {"apiVersion": "muster.giantswarm.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(jsonschema.ValidationError):
        validate_mcpserver(doc)


def test_every_status_the_writer_renders_fits_the_crd_status_schema() -> None:
    now = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    base = {"apiVersion": "muster.giantswarm.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "a"}}
    spec = {"type": "streamable-http", "url": "https://x/mcp"}
    for state in ("Connecting", "Connected", "Auth Required", "Disconnected", "Failed"):
        status = ServerStatus(
            namespace="muster",
            name="a",
            state=state,
            last_error="boom" if state in ("Failed", "Disconnected") else None,
            last_connected=now,
            next_retry_after=now,
            consecutive_failures=2,
            tool_count=3,
            observed_generation=4,
            protocol_version="2025-11-25",
            server_info={"name": "mcp-kubernetes", "version": "1.0.0", "extra": "dropped"},
        )
        validate_mcpserver({**base, "spec": spec, "status": render(status, None, now)})
