"""What the meta-tools read: one catalog revision's tools, resources and prompts, indexed once."""

from collections.abc import Mapping, Sequence
from typing import Any

from shared.meta._gojson import format_v, lower
from shared.meta.ranking import RankIndex

LABELS_KEY = "muster.giantswarm.io/labels"  # where a tool's discovery labels live in its _meta


def labels_of(tool: Mapping[str, Any]) -> dict[str, str]:
    meta = tool.get("_meta")
    raw = meta.get(LABELS_KEY) if isinstance(meta, Mapping) else None
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): format_v(v) for k, v in raw.items()}


class ToolCatalog:
    """The tools of one catalog revision, in listing order, with what filtering and ranking need precomputed.

    Build it when the revision changes (the same moment the tools/list bytes are encoded) and share it between
    every session and call of that revision: it is read-only once built.
    """

    def __init__(self, tools: Sequence[Mapping[str, Any]]) -> None:
        self.tools: list[Mapping[str, Any]] = list(tools)
        self.names: list[str] = [str(t.get("name", "")) for t in self.tools]
        self.descriptions: list[str] = [str(t.get("description") or "") for t in self.tools]
        self.positions: dict[str, int] = {}
        for position, name in enumerate(self.names):
            self.positions.setdefault(name, position)
        self.labels: list[dict[str, str]] = [labels_of(t) for t in self.tools]
        # Go lowercases both sides on every call; lowering the catalog side once is the same comparison.
        self.lower_names = [lower(n) for n in self.names]
        self.lower_descriptions = [lower(d) for d in self.descriptions]
        self.index = RankIndex(zip(self.names, self.descriptions, strict=True))

    def __len__(self) -> int:
        return len(self.tools)


class MetaCatalog:
    """Everything a meta-tool call reads. `visible` restricts the tools to the positions a session may see (None:
    all of them); the index stays the revision's, and ranking counts over the visible candidates only."""

    def __init__(
        self,
        tools: ToolCatalog,
        resources: Sequence[Mapping[str, Any]] = (),
        prompts: Sequence[Mapping[str, Any]] = (),
        servers_requiring_auth: Sequence[str] = (),
        visible: Sequence[int] | None = None,
    ) -> None:
        self.tools = tools
        self.resources = resources
        self.prompts = prompts
        self.servers_requiring_auth = servers_requiring_auth
        self.visible = None if visible is None else sorted(set(visible))
        self._visible = None if visible is None else frozenset(visible)

    def visible_tools(self) -> list[Mapping[str, Any]]:
        if self.visible is None:
            return self.tools.tools
        return [self.tools.tools[p] for p in self.visible]

    def find_tool(self, name: str) -> Mapping[str, Any] | None:
        position = self.tools.positions.get(name)
        if position is None or (self._visible is not None and position not in self._visible):
            return None
        return self.tools.tools[position]

    def find_resource(self, uri: str) -> Mapping[str, Any] | None:
        return next((r for r in self.resources if r.get("uri") == uri), None)

    def find_prompt(self, name: str) -> Mapping[str, Any] | None:
        return next((p for p in self.prompts if p.get("name") == name), None)
