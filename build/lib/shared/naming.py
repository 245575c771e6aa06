"""How upstream names become the names agents see: the Go muster's `x_<prefix>_<name>` rule and its modes."""

from typing import Literal

PrefixMode = Literal["always", "conditional", "never"]
MUSTER_PREFIX = "x"


def prefix_for(server: str, tool_prefix: str | None, mode: PrefixMode, server_count: int) -> str:
    """The prefix in force for one server, or "" when its names pass unchanged."""
    if mode == "never" or (mode == "conditional" and server_count <= 1):
        return ""
    return tool_prefix or server


def expose(prefix: str, name: str) -> str:
    if not prefix:
        return name
    if name.startswith(prefix + "_"):  # not doubled: tool `kubernetes_get` of prefix `kubernetes`
        return f"{MUSTER_PREFIX}_{name}"
    return f"{MUSTER_PREFIX}_{prefix}_{name}"
