"""The tools of mcp-kubernetes as its default in-cluster deployment registers them (reference/mcp-kubernetes.md §2).

Schemas, annotations, result shapes and error texts follow the Go server, quirks included.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator

from demo.kubernetes.objects import EPOCH, RESOURCE_TYPES, VERBS, Cluster, age, resolve_type

READ = {"readOnlyHint": True, "destructiveHint": True, "idempotentHint": False, "openWorldHint": False}
OUTPUT = {"type": "string", "enum": ["slim", "normal", "wide", "full"], "description": "Output detail level"}


@dataclass(frozen=True)
class Identity:
    email: str = "system:anonymous"
    groups: tuple[str, ...] = ("system:unauthenticated",)
    sub: str = "anonymous"


@dataclass
class Policy:
    """Kubernetes RBAC in miniature: subject or group -> rules of (verbs, resources, namespaces); allow-only."""

    rules: dict[str, list[dict[str, list[str]]]] = field(default_factory=dict)

    def allows(self, who: Identity, verb: str, resource: str, namespace: str | None) -> bool:
        for subject in (who.email, *who.groups):
            for rule in self.rules.get(subject, []):
                if verb not in rule.get("verbs", []) and "*" not in rule.get("verbs", []):
                    continue
                if resource not in rule.get("resources", []) and "*" not in rule.get("resources", []):
                    continue
                spaces = rule.get("namespaces", ["*"])
                if "*" in spaces or (namespace is not None and namespace in spaces):
                    return True
        return False


# Everyone may read everything but secrets: the demo shows an RBAC denial on `list secrets`.
DEMO_POLICY = {
    subject: [{"verbs": ["get", "list", "watch"], "resources": [r for r in RESOURCE_TYPES if r != "secrets"]}]
    for subject in ("system:unauthenticated", "system:authenticated")
}


class ToolError(Exception):
    """Becomes an isError result with this text, as the Go handlers return them."""


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _s(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _b(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _n(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "number", "description": description, **extra}


def definitions(capi_mode: bool, destructive: bool) -> list[dict[str, Any]]:
    cluster = {"cluster": _s("Target workload cluster name (empty: the management cluster)")} if capi_mode else {}
    ns = {"namespace": _s("Kubernetes namespace")}
    resource = {
        "resourceType": _s("Resource type (e.g. pods, deployments, services)"),
        "apiGroup": _s("API group of the resource type (e.g. apps)"),
    }
    tools = [
        (
            "get",
            "Get a specific Kubernetes resource by name",
            _schema(
                {**cluster, **ns, **resource, "name": _s("Name of the resource"), "output": OUTPUT},
                ["resourceType", "name"],
            ),
            READ,
        ),
        (
            "list",
            "List Kubernetes resources with optional label and field selectors and pagination",
            _schema(
                {
                    **cluster,
                    **ns,
                    **resource,
                    "labelSelector": _s("Label selector"),
                    "fieldSelector": _s("Field selector"),
                    "filter": {"type": "object", "description": "Client-side filter"},
                    "allNamespaces": _b("List across all namespaces"),
                    "fullOutput": _b("Return full objects"),
                    "includeLabels": _b("Include labels"),
                    "includeAnnotations": _b("Include annotations"),
                    "limit": _n("Maximum number of items (default 20)", default=20),
                    "continue": _s("Continue token from a previous page"),
                    "summary": _b("Return counts only"),
                    "output": OUTPUT,
                },
                ["resourceType"],
            ),
            READ,
        ),
        (
            "describe",
            "Describe a Kubernetes resource and its recent events",
            _schema(
                {
                    **cluster,
                    **ns,
                    **resource,
                    "name": _s("Name of the resource"),
                    "eventsLimit": _n("Maximum events to return (1-1000, default 50)", minimum=1, maximum=1000),
                    "output": OUTPUT,
                },
                ["resourceType", "name"],
            ),
            READ,
        ),
        (
            "logs",
            "Get logs from a pod container",
            _schema(
                {
                    **cluster,
                    "namespace": _s("Kubernetes namespace"),
                    "podName": _s("Name of the pod"),
                    "containerName": _s("Container name"),
                    "follow": _b("Follow the log stream"),
                    "previous": _b("Logs of the previous container instance"),
                    "timestamps": _b("Include timestamps"),
                    "tailLines": _n("Lines from the end (1-1000, default 100)", minimum=1, maximum=1000),
                    "sinceTime": _s("Only logs after this RFC3339 time"),
                    "output": OUTPUT,
                },
                ["namespace", "podName"],
            ),
            READ,
        ),
        (
            "api_resources",
            "List the API resources the cluster serves",
            _schema(
                {
                    **cluster,
                    "apiGroup": _s("Only this API group"),
                    "namespaced": _b("Only namespaced resources"),
                    "verbs": _s("Only resources supporting these verbs (comma-separated)"),
                    "limit": _n("Maximum items (default 20)", default=20),
                    "offset": _n("Items to skip"),
                },
                [],
            ),
            READ,
        ),
        (
            "cluster_health",
            "Report the health of control-plane components and nodes",
            _schema(
                {
                    **cluster,
                    "nodesLimit": _n("Maximum nodes (1-1000, default 20)", minimum=1, maximum=1000),
                    "includeNodeConditions": _b("Include node conditions"),
                },
                [],
            ),
            READ,
        ),
    ]
    if capi_mode:
        tools += [
            (
                "capi_list_clusters",
                "List CAPI workload clusters",
                _schema(
                    {
                        "organization": _s("Organization"),
                        "provider": _s("Infrastructure provider"),
                        "status": _s("Cluster phase"),
                        "readyOnly": _b("Only ready clusters"),
                        "labelSelector": _s("Label selector"),
                        "limit": _n("Maximum clusters (default 100, max 500)"),
                    },
                    [],
                ),
                READ,
            ),
            (
                "capi_get_cluster",
                "Get the details of a CAPI workload cluster",
                _schema({"name": _s("Cluster name")}, ["name"]),
                READ,
            ),
        ]
    if destructive:
        tools += [
            (
                "delete",
                "Delete a Kubernetes resource",
                _schema({**cluster, **ns, **resource, "name": _s("Name of the resource")}, ["resourceType", "name"]),
                {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": False},
            ),
            (
                "scale",
                "Scale a deployment or statefulset",
                _schema(
                    {
                        **cluster,
                        "namespace": _s("Kubernetes namespace"),
                        **resource,
                        "name": _s("Name"),
                        "replicas": _n("Desired replicas"),
                    },
                    ["namespace", "resourceType", "name", "replicas"],
                ),
                {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True, "openWorldHint": False},
            ),
        ]
    result = [{"name": n, "description": d, "inputSchema": s, "annotations": a} for n, d, s, a in tools]
    return sorted(result, key=lambda t: t["name"])


def _pointer(path: Any) -> str:
    parts = [str(p) for p in path]
    return "/" + "/".join(parts) if parts else "<root>"


def validation_error(validator: Draft202012Validator, arguments: dict[str, Any]) -> str | None:
    """The Go server's message for arguments that fail the schema, or None when they pass."""
    problems = []
    for error in sorted(validator.iter_errors(arguments), key=lambda e: (list(e.path), e.validator)):
        where = _pointer(error.path)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            problems.append(f"{where}: missing property '{missing}'")
        elif error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            problems.append(f"{where}: additional properties {', '.join(repr(e) for e in extra)} not allowed")
        elif error.validator == "type":
            got = {
                bool: "boolean",
                str: "string",
                int: "number",
                float: "number",
                list: "array",
                dict: "object",
                type(None): "null",
            }.get(type(error.instance), "value")
            problems.append(f"{where}: got {got}, want {error.validator_value}")
        elif error.validator == "enum":
            problems.append(f"{where}: value must be one of {', '.join(json.dumps(v) for v in error.validator_value)}")
        elif error.validator in ("minimum", "maximum"):
            op = ">=" if error.validator == "minimum" else "<="
            problems.append(f"{where}: must be {op} {error.validator_value} but found {error.instance}")
        else:
            problems.append(f"{where}: {error.message}")
    return "; ".join(problems) if problems else None


class Handlers:
    """The tool implementations over one in-memory cluster."""

    def __init__(self, cluster: Cluster, policy: Policy, capi_mode: bool = False) -> None:
        self.cluster = cluster
        self.policy = policy
        self.capi_mode = capi_mode

    def _check(self, who: Identity, verb: str, resource: str, namespace: str | None, op: str) -> None:
        if self.policy.allows(who, verb, resource, namespace):
            return
        group = RESOURCE_TYPES[resource][1]
        scope = (
            f'in the namespace "{namespace}"' if namespace and RESOURCE_TYPES[resource][3] else "at the cluster scope"
        )
        raise ToolError(
            f'{op}{resource} is forbidden: User "{who.email}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" {scope}'
        )

    def _target(self, args: dict[str, Any]) -> None:
        name = args.get("cluster")
        if name and not self.capi_mode:
            raise ToolError("multi-cluster operations require federation mode to be enabled")
        if name and name not in self.cluster.workload_clusters:
            raise ToolError("cluster access denied or unavailable")

    def _type(self, args: dict[str, Any]) -> str:
        raw = args.get("resourceType") or ""
        if not raw:
            raise ToolError("resourceType is required")
        resolved = resolve_type(raw)
        if resolved is None:
            raise ToolError(
                f'failed to resolve resource type "{raw}": the server doesn\'t have a resource type "{raw}"'
            )
        return resolved

    def call(self, name: str, args: dict[str, Any], who: Identity) -> str:
        self._target(args)
        handler = getattr(self, "tool_" + name)
        result: str = handler(args, who)
        return result

    def tool_get(self, args: dict[str, Any], who: Identity) -> str:
        rtype = self._type(args)
        namespaced = RESOURCE_TYPES[rtype][3]
        namespace = (args.get("namespace") or "default") if namespaced else None
        name = args["name"]
        self._check(who, "get", rtype, namespace, f'Failed to get resource: failed to get {rtype} "{name}": ')
        obj = self.cluster.find(rtype, namespace, name)
        if obj is None:
            raise ToolError(f'Failed to get resource: failed to get {rtype} "{name}": {rtype} "{name}" not found')
        meta = {
            "resourceScope": "namespaced" if namespaced else "cluster",
            "requestedNamespace": args.get("namespace", ""),
            "effectiveNamespace": namespace or "",
        }
        return json.dumps({"resource": obj, "_meta": meta}, indent=2)

    def tool_list(self, args: dict[str, Any], who: Identity) -> str:
        rtype = self._type(args)
        kind, _, _, namespaced, _ = RESOURCE_TYPES[rtype]
        namespace = None if (args.get("allNamespaces") or not namespaced) else (args.get("namespace") or "default")
        self._check(who, "list", rtype, namespace, f"Failed to list resources: failed to list {rtype}: ")
        items = self.cluster.select(rtype, namespace)
        selector = args.get("labelSelector")
        if selector:
            wanted = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
            items = [o for o in items if all(o["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
        total = len(items)
        limit = max(1, min(int(args.get("limit") or 20), 1000))
        start = int(args.get("continue") or 0) if str(args.get("continue") or "0").isdigit() else 0
        page = items[start : start + limit]
        if args.get("summary"):
            return json.dumps({"kind": f"{kind}List", "totalItems": total}, indent=2)
        if args.get("fullOutput"):
            body: dict[str, Any] = {"items": page, "totalItems": total, "resourceVersion": "4711"}
        else:
            body = {"kind": f"{kind}List" if page else "List", "items": [self._summary(o, args) for o in page]}
            body["totalItems"] = total
        if start + limit < total:
            body["continue"] = str(start + limit)
            body["remainingItems"] = total - start - limit
        return json.dumps(body, indent=2)

    @staticmethod
    def _summary(obj: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        created = datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=EPOCH.tzinfo)
        item: dict[str, Any] = {"name": meta["name"]}
        if "namespace" in meta:
            item["namespace"] = meta["namespace"]
        item |= {
            "kind": obj["kind"],
            "apiVersion": obj["apiVersion"],
            "creationTimestamp": meta["creationTimestamp"],
            "age": age(created, EPOCH),
        }
        status = obj.get("status", {})
        if obj["kind"] == "Pod":
            statuses = status.get("containerStatuses", [])
            waiting = [s["state"]["waiting"]["reason"] for s in statuses if "waiting" in s["state"]]
            item["status"] = waiting[0] if waiting else status.get("phase", "")
            item["ready"] = f"{sum(s['ready'] for s in statuses)}/{len(statuses)}"
        elif obj["kind"] == "Deployment":
            item["ready"] = f"{status.get('readyReplicas', 0)}/{obj['spec']['replicas']}"
        elif obj["kind"] == "Node":
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            item["status"] = "Ready" if ready["status"] == "True" else "NotReady"
        elif "phase" in status:
            item["status"] = status["phase"]
        if args.get("includeLabels") and meta.get("labels"):
            item["labels"] = meta["labels"]
        return item

    def tool_describe(self, args: dict[str, Any], who: Identity) -> str:
        got = json.loads(self.tool_get(args, who))
        obj = got["resource"]
        limit = int(args.get("eventsLimit") or 50)
        events = [
            e for e in self.cluster.objects.get("events", []) if e["involvedObject"]["name"] == obj["metadata"]["name"]
        ]
        shown = events[:limit]
        return json.dumps(
            {
                "resource": obj,
                "_meta": got["_meta"],
                "events": shown,
                "totalEvents": len(events),
                "returnedEvents": len(shown),
                "eventsTruncated": len(events) > len(shown),
            },
            indent=2,
        )

    def tool_logs(self, args: dict[str, Any], who: Identity) -> str:
        namespace, pod = args["namespace"], args["podName"]
        self._check(who, "get", "pods", namespace, f'failed to get logs for pod "{pod}": ')
        obj = self.cluster.find("pods", namespace, pod)
        if obj is None:
            raise ToolError(f'failed to get logs for pod "{pod}": pods "{pod}" not found')
        container = args.get("containerName") or obj["spec"]["containers"][0]["name"]
        lines = self.cluster.logs.get((namespace, pod, container))
        if lines is None:
            raise ToolError(f'failed to get logs for pod "{pod}": container "{container}" is not valid for pod "{pod}"')
        tail = int(args.get("tailLines") or 100)
        shown = lines[-tail:]
        if not args.get("timestamps"):
            shown = [line.split(" ", 1)[1] for line in shown]
        return "\n".join(shown)

    def tool_api_resources(self, args: dict[str, Any], who: Identity) -> str:
        items = [
            {
                "name": name,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "group": group,
                "version": api_version.split("/")[-1],
                "verbs": VERBS,
                "shortNames": shorts,
            }
            for name, (kind, group, api_version, namespaced, shorts) in RESOURCE_TYPES.items()
        ]
        if args.get("apiGroup") is not None:
            items = [i for i in items if i["group"] == args["apiGroup"]]
        if args.get("namespaced") is not None:
            items = [i for i in items if i["namespaced"] == args["namespaced"]]
        offset, limit = int(args.get("offset") or 0), int(args.get("limit") or 20)
        page = items[offset : offset + limit]
        more = offset + limit < len(items)
        body: dict[str, Any] = {"items": page, "totalItems": len(page), "totalCount": len(items), "hasMore": more}
        if more:
            body["nextOffset"] = offset + limit
        return json.dumps(body, indent=2)

    def tool_cluster_health(self, args: dict[str, Any], who: Identity) -> str:
        self._check(who, "list", "nodes", None, "Failed to get cluster health: failed to list nodes: ")
        nodes = self.cluster.objects["nodes"]
        ready = [
            n for n in nodes if next(c for c in n["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"
        ]
        limit = int(args.get("nodesLimit") or 20)
        shown = []
        for node in nodes[:limit]:
            entry = {
                "name": node["metadata"]["name"],
                "ready": node in ready,
                "kubeletVersion": node["status"]["nodeInfo"]["kubeletVersion"],
            }
            if args.get("includeNodeConditions"):
                entry["conditions"] = node["status"]["conditions"]
            shown.append(entry)
        components = [
            {"name": c, "healthy": True}
            for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
        ]
        status = "Healthy" if len(ready) == len(nodes) else "Degraded"
        return json.dumps(
            {
                "status": status,
                "components": components,
                "nodes": shown,
                "totalNodes": len(nodes),
                "returnedNodes": len(shown),
                "readyNodes": len(ready),
            },
            indent=2,
        )

    def tool_capi_list_clusters(self, args: dict[str, Any], who: Identity) -> str:
        clusters = [
            {
                "name": c["metadata"]["name"],
                "namespace": c["metadata"]["namespace"],
                "organization": "acme",
                "provider": "capa",
                "release": "31.1.0",
                "status": c["status"]["phase"],
                "ready": True,
                "age": age(EPOCH.replace(day=1), EPOCH),
                "nodeCount": 3,
            }
            for c in self.cluster.objects.get("clusters", [])
        ]
        return json.dumps({"clusters": clusters, "totalCount": len(clusters), "returnedCount": len(clusters)}, indent=2)

    def tool_capi_get_cluster(self, args: dict[str, Any], who: Identity) -> str:
        obj = self.cluster.find("clusters", None, args["name"])
        if obj is None:
            raise ToolError("cluster access denied or unavailable")
        return json.dumps(obj, indent=2)

    def tool_delete(self, args: dict[str, Any], who: Identity) -> str:
        rtype = self._type(args)
        namespace = (args.get("namespace") or "default") if RESOURCE_TYPES[rtype][3] else None
        self._check(
            who, "delete", rtype, namespace, f'Failed to delete resource: failed to delete {rtype} "{args["name"]}": '
        )
        obj = self.cluster.find(rtype, namespace, args["name"])
        if obj is None:
            raise ToolError(f'Failed to delete resource: {rtype} "{args["name"]}" not found')
        self.cluster.objects[rtype].remove(obj)
        return json.dumps({"message": f"{rtype} {args['name']} deleted"}, indent=2)

    def tool_scale(self, args: dict[str, Any], who: Identity) -> str:
        rtype = self._type(args)
        self._check(who, "patch", rtype, args["namespace"], "Failed to scale: ")
        obj = self.cluster.find(rtype, args["namespace"], args["name"])
        if obj is None:
            raise ToolError(f'Failed to scale: {rtype} "{args["name"]}" not found')
        obj["spec"]["replicas"] = int(args["replicas"])
        return json.dumps({"message": f"scaled {rtype} {args['name']} to {int(args['replicas'])}"}, indent=2)
