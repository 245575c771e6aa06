"""What meta mode costs an agent, in bytes: python -m bench.meta_tokens [--docs docs/meta-tools.md] [--readme README.md]

For the demo catalogue (the two mcp-kubernetes stand-ins) and a synthetic one (10 clusters x 40 tools), with and
without families, it builds the exposed catalog with the code the ingress uses, runs one task both ways and counts
the bytes of the JSON-RPC messages on the wire:

- direct: tools/list, then one tools/call;
- meta: tools/list (the 11 meta-tools), then filter_tools with the task's words, describe_tool of the best hit,
  call_tool of it ("known tool": call_tool alone, for an agent that already knows the name and arguments).

A model reads the tool definitions on every turn and every earlier message of the task again, so the input an
agent pays over a task of n turns is  n * list + sum over turns of the messages before it. The upstream answer is
what the demo's mcp-kubernetes handlers return for the task, the same bytes in both modes.
"""

import argparse
import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from demo.kubernetes.objects import build
from demo.kubernetes.tools import DEMO_POLICY, Handlers, Identity, Policy, definitions
from shared.mcpserver import Family
from shared.messages import ServerState
from shared.meta.catalog import MetaCatalog, ToolCatalog
from shared.meta.definitions import META_TOOLS
from shared.meta.errors import ToolNotFound
from shared.meta.families import FamilyRoute, ToolRoute, assemble, resolve
from shared.meta.handlers import run

FAMILY = Family(name="mc", instance_arg="management_cluster")

# 30 more operations of a management cluster's MCP server, to make 40 tools per cluster with the 10 of
# mcp-kubernetes (federation mode, destructive tools on): name, description, properties.
_MORE = [
    ("events", "List events of a namespace or of one object, newest first", "namespace involvedObject limit"),
    ("top_pods", "Show CPU and memory usage of pods", "namespace labelSelector sortBy"),
    ("top_nodes", "Show CPU and memory usage of nodes", "labelSelector sortBy"),
    ("rollout_status", "Show the rollout status of a deployment, daemonset or statefulset", "namespace kind name"),
    ("rollout_restart", "Restart the pods of a deployment, daemonset or statefulset", "namespace kind name"),
    ("rollout_history", "Show the revision history of a rollout", "namespace kind name"),
    ("rollout_undo", "Roll back a rollout to a previous revision", "namespace kind name revision"),
    ("cordon_node", "Mark a node unschedulable", "name"),
    ("uncordon_node", "Mark a node schedulable again", "name"),
    ("drain_node", "Evict the pods of a node before maintenance", "name gracePeriod timeout ignoreDaemonsets"),
    ("exec", "Run a command in a container of a pod", "namespace podName containerName command"),
    ("port_forward_info", "Show how to reach a service port from the management cluster", "namespace service port"),
    ("get_yaml", "Get the YAML of a Kubernetes object as stored by the API server", "namespace resourceType name"),
    ("apply", "Apply a manifest to the cluster with server-side apply", "manifest fieldManager dryRun"),
    ("patch", "Patch a Kubernetes object with a JSON merge or strategic patch", "namespace resourceType name patch"),
    ("label", "Add, change or remove labels of an object", "namespace resourceType name labels"),
    ("annotate", "Add, change or remove annotations of an object", "namespace resourceType name annotations"),
    ("diff", "Show what applying a manifest would change", "manifest"),
    ("explain", "Explain the fields of a resource type", "resourceType field apiVersion"),
    ("auth_can_i", "Check whether the caller may perform a verb on a resource", "verb resourceType namespace"),
    ("get_quota", "Show resource quotas and limit ranges of a namespace", "namespace"),
    ("list_crds", "List the custom resource definitions the cluster serves", "group"),
    ("get_crd", "Get a custom resource definition with its versions and schema", "name"),
    ("helm_list", "List the Helm releases of a namespace", "namespace allNamespaces"),
    ("helm_get_values", "Get the values of a Helm release", "namespace release"),
    ("list_kustomizations", "List Flux Kustomizations and whether they are ready", "namespace"),
    ("reconcile_kustomization", "Reconcile a Flux Kustomization now", "namespace name"),
    ("list_certificates", "List cert-manager certificates and their expiry", "namespace"),
    ("node_conditions", "Show the conditions and taints of a node", "name"),
    ("debug_pod", "Start an ephemeral debug container in a pod", "namespace podName image"),
]


def forty_tools() -> list[dict[str, Any]]:
    tools = definitions(capi_mode=True, destructive=True)
    for name, description, params in _MORE:
        properties = {p: {"type": "string", "description": f"The {p} to use"} for p in params.split()}
        properties["cluster"] = {"type": "string", "description": "Target workload cluster name (empty: the MC)"}
        tools.append(
            {
                "name": name,
                "description": description,
                "inputSchema": {"type": "object", "properties": properties, "required": params.split()[:1]},
                "annotations": {"readOnlyHint": not name.startswith(("rollout_r", "rollout_u", "cordon", "drain"))},
            }
        )
    return tools


@dataclass(frozen=True)
class Server:
    name: str
    prefix: str
    family: Family | None
    tools: Sequence[Mapping[str, Any]]
    state: ServerState = "Connected"
    exposed: bool = True
    prompts: Sequence[Mapping[str, Any]] = ()
    safe_tools: Sequence[str] | None = None


@dataclass(frozen=True)
class Catalogue:
    title: str
    clusters: list[str]
    tools: list[dict[str, Any]]

    def servers(self, families: bool) -> list[Server]:
        return [Server(f"k8s-{c}", c, FAMILY if families else None, self.tools) for c in self.clusters]


DEMO = Catalogue("demo: 2 clusters x 6 tools", ["gazelle", "graveler"], definitions(capi_mode=False, destructive=False))
SYNTHETIC = Catalogue(
    "synthetic: 10 clusters x 40 tools",
    ["gazelle", "graveler", "goldeen", "golbat", "golem", "gengar", "geodude", "glalie", "gible", "gogoat"],
    forty_tools(),
)

TARGET = "graveler"  # the task: list the pods of namespace org-acme on the management cluster graveler
QUERIES = ("list pods on graveler", "list pods")  # the task's words, then the words an agent may well use


@dataclass(frozen=True)
class Size:
    wire: int  # the JSON-RPC messages as sent
    seen: int  # what a client hands the model: definitions as JSON, call name and arguments, result texts


@dataclass
class Row:
    catalogue: str
    mode: str
    definitions: Size
    calls: list[tuple[str, Size]] = field(default_factory=list)  # (what, request + response)
    found: str = ""  # the tool the task ran, and where the ranking put it

    @property
    def turns(self) -> int:
        return len(self.calls) + 1

    def over_the_task(self, measure: str) -> int:
        """Every turn reads the definitions and all messages before it."""
        total, history = 0, 0
        for _, size in [("start", Size(0, 0)), *self.calls]:
            history += getattr(size, measure)
            total += getattr(self.definitions, measure) + history
        return total


def _listing(tools: Sequence[Mapping[str, Any]]) -> Size:
    wire = len(orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}))
    return Size(wire, len(orjson.dumps(tools)))


def _exchange(message_id: int, name: str, arguments: Mapping[str, Any], result: Mapping[str, Any]) -> Size:
    params = {"name": name, "arguments": arguments}
    request = orjson.dumps({"jsonrpc": "2.0", "id": message_id, "method": "tools/call", "params": params})
    response = orjson.dumps({"jsonrpc": "2.0", "id": message_id, "result": result})
    texts = sum(len(c["text"].encode()) for c in result["content"] if c.get("type") == "text")
    return Size(len(request) + len(response), len(orjson.dumps(params)) + texts)


class _Backend:
    """Runs a tools/call the way the ingress will: resolve through the routes, answer with the demo handlers."""

    def __init__(self, routes: Mapping[str, ToolRoute]) -> None:
        self.routes = routes
        self.handlers = {c: Handlers(build(c), Policy(DEMO_POLICY)) for c in ("gazelle", "graveler")}

    async def call_tool(self, name: str, arguments: dict[str, Any], meta: Mapping[str, Any] | None) -> dict[str, Any]:
        route, forwarded = resolve(self.routes, name, arguments)
        handlers = self.handlers[TARGET if route.server.endswith(TARGET) else "gazelle"]
        text = handlers.call(route.name, forwarded, Identity())
        return {"content": [{"type": "text", "text": text}], "isError": False}

    async def read_resource(self, uri: str) -> dict[str, Any]:
        raise ToolNotFound(uri)

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> dict[str, Any]:
        raise ToolNotFound(name)


def _task_arguments(name: str, route: ToolRoute) -> dict[str, Any]:
    arguments: dict[str, Any] = {"resourceType": "pods", "namespace": "org-acme"}
    if isinstance(route, FamilyRoute):
        arguments[route.instance_arg] = f"k8s-{TARGET}"
    return arguments


async def measure(catalogue: Catalogue, families: bool, query: str) -> list[Row]:
    exposure = assemble(catalogue.servers(families))
    label = "families" if families else "per-server names"
    target = "x_mc_list" if families else f"x_{TARGET}_list"
    backend = _Backend(exposure.routes)
    arguments = _task_arguments(target, exposure.routes[target])

    direct = Row(catalogue.title, f"direct, {label}", _listing(exposure.tools), found=target)
    upstream = await backend.call_tool(target, dict(arguments), None)
    direct.calls.append(("tools/call", _exchange(2, target, arguments, upstream)))

    catalog = MetaCatalog(ToolCatalog(exposure.tools))
    meta = Row(catalogue.title, f"meta, {label}", _listing(META_TOOLS))
    # The agent pages through filter_tools until the tool it needs shows up (at most 20 pages).
    shown = 0
    for page in range(20):
        args: dict[str, Any] = {"query": query} if page == 0 else {"query": query, "offset": 5 * page}
        found = await run("filter_tools", args, catalog, backend)
        meta.calls.append(("filter_tools", _exchange(2, "filter_tools", args, found)))
        hits = [t["name"] for t in orjson.loads(found["content"][0]["text"])["tools"]]
        if target in hits:
            meta.found = f"{target} (#{shown + hits.index(target) + 1} of the ranking)"
            break
        shown += len(hits)
    else:
        meta.found = "never found"
    described = await run("describe_tool", {"name": target}, catalog, backend)
    meta.calls.append(("describe_tool", _exchange(3, "describe_tool", {"name": target}, described)))
    call_args = {"name": target, "arguments": arguments}
    called = await run("call_tool", call_args, catalog, backend)
    meta.calls.append(("call_tool", _exchange(4, "call_tool", call_args, called)))

    known = Row(catalogue.title, f"meta, known tool, {label}", meta.definitions, [meta.calls[-1]], found=target)
    return [direct, meta, known]


async def measure_all(query: str) -> list[Row]:
    rows: list[Row] = []
    for catalogue in (DEMO, SYNTHETIC):
        for families in (False, True):
            rows += await measure(catalogue, families, query)
    return rows


def markdown(rows: Sequence[Row]) -> str:
    lines = [
        "| catalogue | mode | tools/list | calls of the task | turns | input over the task | model reads | the tool |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        calls = " + ".join(f"{what} {size:,}" for what, size in _collapsed(r.calls))
        lines.append(
            f"| {r.catalogue} | {r.mode} | {r.definitions.wire:,} | {calls} | {r.turns} "
            f"| {r.over_the_task('wire'):,} | {r.over_the_task('seen'):,} | {r.found} |"
        )
    return "\n".join(lines)


def _collapsed(calls: Sequence[tuple[str, Size]]) -> list[tuple[str, int]]:
    """Wire bytes per call; repeated calls of one tool as one entry: "filter_tools x3 3,400"."""
    out: list[tuple[str, int]] = []
    counts: dict[str, int] = {}
    for what, size in calls:
        if out and out[-1][0].split(" x")[0] == what:
            counts[what] += 1
            out[-1] = (f"{what} x{counts[what]}", out[-1][1] + size.wire)
        else:
            counts[what] = 1
            out.append((what, size.wire))
    return out


async def report() -> str:
    sections = []
    for query in QUERIES:
        sections.append(f"Task query `{query}`:\n\n" + markdown(await measure_all(query)))
    return "\n\n".join(sections)


DOC_START = "<!-- meta_tokens: python -m bench.meta_tokens --docs docs/meta-tools.md -->\n"
README_START = "<!-- meta_tokens: python -m bench.meta_tokens --readme README.md -->\n"
DOC_END = "\n<!-- /meta_tokens -->"


async def readme_table() -> str:
    """The README's table: the task in its own words, every catalogue and mode."""
    return markdown(await measure_all(QUERIES[0]))


def _replace(path: Path, start_marker: str, table: str) -> None:
    doc = path.read_text()
    start = doc.index(start_marker) + len(start_marker)
    end = doc.index(DOC_END, start)
    path.write_text(doc[:start] + table + doc[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, help="replace the table between the markers of this file")
    parser.add_argument("--readme", type=Path, help="replace the README's shorter table between its markers")
    options = parser.parse_args()
    table = asyncio.run(report())
    if options.docs is None and options.readme is None:
        print(table)
    if options.docs is not None:
        _replace(options.docs, DOC_START, table)
    if options.readme is not None:
        _replace(options.readme, README_START, asyncio.run(readme_table()))


if __name__ == "__main__":
    main()
