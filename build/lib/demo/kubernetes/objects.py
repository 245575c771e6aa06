"""An in-memory management cluster: the Kubernetes objects the stand-in serves, made from the cluster's name."""

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(2026, 11, 1, tzinfo=UTC)

# resourceType -> (kind, apiGroup, apiVersion, namespaced, short names)
RESOURCE_TYPES: dict[str, tuple[str, str, str, bool, list[str]]] = {
    "pods": ("Pod", "", "v1", True, ["po"]),
    "deployments": ("Deployment", "apps", "apps/v1", True, ["deploy"]),
    "services": ("Service", "", "v1", True, ["svc"]),
    "configmaps": ("ConfigMap", "", "v1", True, ["cm"]),
    "secrets": ("Secret", "", "v1", True, []),
    "namespaces": ("Namespace", "", "v1", False, ["ns"]),
    "nodes": ("Node", "", "v1", False, ["no"]),
    "events": ("Event", "", "v1", True, ["ev"]),
    "clusters": ("Cluster", "cluster.x-k8s.io", "cluster.x-k8s.io/v1beta1", True, ["cl"]),
}
ALIASES = {short: name for name, (*_, shorts) in RESOURCE_TYPES.items() for short in shorts} | {
    kind.lower(): name for name, (kind, *_) in RESOURCE_TYPES.items()
}
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


def resolve_type(resource_type: str) -> str | None:
    key = resource_type.lower()
    if key in RESOURCE_TYPES:
        return key
    return ALIASES.get(key) or ALIASES.get(key.rstrip("s"))


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def age(created: datetime, now: datetime) -> str:
    delta = now - created
    if delta.days:
        return f"{delta.days}d"
    hours = delta.seconds // 3600
    return f"{hours}h" if hours else f"{delta.seconds // 60}m"


@dataclass
class Cluster:
    name: str
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    logs: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    workload_clusters: list[str] = field(default_factory=list)

    def find(self, resource_type: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        for obj in self.objects.get(resource_type, []):
            meta = obj["metadata"]
            if meta["name"] == name and (namespace is None or meta.get("namespace") in (None, namespace)):
                return obj
        return None

    def select(self, resource_type: str, namespace: str | None) -> list[dict[str, Any]]:
        items = self.objects.get(resource_type, [])
        if namespace is None:
            return list(items)
        return [o for o in items if o["metadata"].get("namespace") == namespace]


def _meta(cluster: str, kind: str, name: str, namespace: str | None, days: int, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": _digest(cluster, kind, namespace or "", name)[:8]
        + "-"
        + _digest(name, cluster)[:4]
        + "-4000-8000-"
        + _digest(kind, name)[:12],
        "resourceVersion": str(int(_digest(cluster, name, kind)[:6], 16)),
        "creationTimestamp": (EPOCH - timedelta(days=days, hours=len(name))).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    return meta


def build(cluster: str, workload_clusters: list[str] | None = None) -> Cluster:
    """A small, plausible management cluster; every value is derived from the names, so runs are reproducible."""
    c = Cluster(cluster, workload_clusters=list(workload_clusters or []))
    namespaces = ["default", "kube-system", "giantswarm", "org-acme", "monitoring"]
    c.objects["namespaces"] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": _meta(cluster, "Namespace", ns, None, 120),
            "status": {"phase": "Active"},
        }
        for ns in namespaces
    ]
    nodes = [f"{cluster}-cp-{i}" for i in range(3)] + [f"{cluster}-worker-{i}" for i in range(4)]
    c.objects["nodes"] = []
    for i, node in enumerate(nodes):
        role = "control-plane" if "-cp-" in node else "worker"
        ready = not (role == "worker" and i == len(nodes) - 1 and cluster.endswith("graveler"))
        c.objects["nodes"].append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": _meta(cluster, "Node", node, None, 60 - i, **{f"node-role.kubernetes.io/{role}": ""}),
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True" if ready else "False",
                            "reason": "KubeletReady" if ready else "KubeletNotReady",
                        },
                        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
                    ],
                    "nodeInfo": {"kubeletVersion": "v1.33.4", "osImage": "Flatcar Container Linux 4230.2.3"},
                    "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                },
            }
        )
    apps = [
        ("kube-system", "coredns", 2),
        ("kube-system", "metrics-server", 1),
        ("giantswarm", "muster", 2),
        ("giantswarm", "mcp-kubernetes", 2),
        ("giantswarm", "dex", 1),
        ("monitoring", "prometheus", 1),
        ("org-acme", "web", 3),
        ("default", "nginx", 1),
    ]
    c.objects["deployments"], c.objects["pods"], c.objects["services"] = [], [], []
    c.objects["configmaps"], c.objects["secrets"], c.objects["events"] = [], [], []
    for ns, app, replicas in apps:
        labels = {"app.kubernetes.io/name": app}
        c.objects["deployments"].append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": _meta(cluster, "Deployment", app, ns, 30, **labels),
                "spec": {"replicas": replicas, "selector": {"matchLabels": labels}},
                "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas},
            }
        )
        c.objects["services"].append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(cluster, "Service", app, ns, 30, **labels),
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": f"10.96.{len(app)}.{replicas * 7}",
                    "ports": [{"port": 8080, "protocol": "TCP"}],
                },
            }
        )
        c.objects["configmaps"].append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(cluster, "ConfigMap", f"{app}-config", ns, 30),
                "data": {"LOG_LEVEL": "info", "CLUSTER": cluster},
            }
        )
        c.objects["secrets"].append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(cluster, "Secret", f"{app}-token", ns, 30),
                "type": "Opaque",
                "data": {"token": "***REDACTED***"},
            }
        )
        for r in range(replicas):
            suffix = _digest(cluster, app, str(r))[:5]
            pod = f"{app}-{_digest(app)[:9]}-{suffix}"
            crashing = app == "web" and r == 0 and cluster.endswith("graveler")
            c.objects["pods"].append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": _meta(cluster, "Pod", pod, ns, 3, **labels),
                    "spec": {
                        "nodeName": nodes[3 + (r % 4)],
                        "containers": [{"name": app, "image": f"gsoci.azurecr.io/giantswarm/{app}:1.{len(app)}.0"}],
                    },
                    "status": {
                        "phase": "Running",
                        "containerStatuses": [
                            {
                                "name": app,
                                "ready": not crashing,
                                "restartCount": 7 if crashing else 0,
                                "state": {"waiting": {"reason": "CrashLoopBackOff"}}
                                if crashing
                                else {"running": {"startedAt": "2026-10-29T08:00:00Z"}},
                            }
                        ],
                    },
                }
            )
            c.logs[(ns, pod, app)] = [
                f'2026-11-01T08:00:{s:02d}Z level=info msg="{app} handled request" cluster={cluster} n={s}'
                for s in range(40)
            ] + (
                [f'2026-11-01T08:01:00Z level=error msg="panic: connection refused" cluster={cluster}']
                if crashing
                else []
            )
            reason = "BackOff" if crashing else "Started"
            c.objects["events"].append(
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": _meta(cluster, "Event", f"{pod}.{reason.lower()}", ns, 0),
                    "involvedObject": {"kind": "Pod", "name": pod, "namespace": ns},
                    "reason": reason,
                    "type": "Warning" if crashing else "Normal",
                    "message": "Back-off restarting failed container" if crashing else f"Started container {app}",
                    "lastTimestamp": "2026-11-01T08:01:00Z",
                    "count": 7 if crashing else 1,
                }
            )
    c.objects["clusters"] = [
        {
            "apiVersion": "cluster.x-k8s.io/v1beta1",
            "kind": "Cluster",
            "metadata": _meta(
                cluster,
                "Cluster",
                wc,
                "org-acme",
                20,
                **{"giantswarm.io/organization": "acme", "cluster.x-k8s.io/provider": "capa"},
            ),
            "status": {"phase": "Provisioned", "controlPlaneReady": True, "infrastructureReady": True},
        }
        for wc in c.workload_clusters
    ]
    return c
