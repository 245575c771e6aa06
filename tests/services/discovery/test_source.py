"""The shape both sources share: changes as `diff` computes them, and the folder behind the same interface."""

import asyncio
from pathlib import Path
from types import MappingProxyType

import anyio
import pytest

from services.discovery.folder import Folder
from services.discovery.source import Change, Desired, FolderSource, Update, diff, settle
from shared.mcpserver import MCPServer, parse
from tests.conftest import server_yaml


def server(name: str, generation: int | None = 1, rv: str = "1", **spec: object) -> MCPServer:
    return parse(
        {
            "apiVersion": "muster.giantswarm.io/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": name, "generation": generation, "resourceVersion": rv},
            "spec": {"type": "streamable-http", "url": f"http://{name}/mcp", **spec},
        }
    )


def desired(*servers: MCPServer, **errors: str) -> Desired:
    return Desired(MappingProxyType({s.name: s for s in servers}), MappingProxyType(errors))


def test_changes_are_reported_per_server_and_a_new_resource_version_alone_is_no_change() -> None:
    old = desired(server("a"), server("b"), server("c"))
    new = desired(server("a", rv="9"), server("b", generation=2, timeout=5), server("d"), bad="bad: spec.url: wrong")
    assert diff(old, new) == (
        Change("modified", "b"),
        Change("removed", "c"),
        Change("added", "d"),
        Change("refused", "bad"),
    )
    assert diff(new, new) == ()


def test_settle_keeps_the_old_object_of_an_unchanged_server() -> None:
    old = desired(server("a"))
    settled = settle(old, desired(server("a", rv="9")))
    assert settled.servers["a"] is old.servers["a"]


@pytest.mark.anyio
async def test_the_folder_source_reports_the_whole_folder_first_then_each_change(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(server_yaml("a", "http://127.0.0.1:9/mcp"))
    (tmp_path / "broken.yaml").write_text("kind: MCPServer\napiVersion: muster.giantswarm.io/v1alpha1\nspec: {}\n")
    updates: list[Update] = []
    source = FolderSource(Folder(tmp_path), poll_seconds=0.02)
    with anyio.fail_after(5):
        async for update in source.updates():
            updates.append(update)
            if len(updates) == 1:
                assert set(update.desired.servers) == {"a"} and "broken.yaml" in update.desired.errors
                await asyncio.sleep(0.05)  # file stamps are per mtime: let a new write show as new
                (tmp_path / "b.yaml").write_text(server_yaml("b", "http://127.0.0.1:9/mcp"))
                (tmp_path / "a.yaml").unlink()
            elif set(update.desired.servers) == {"b"}:
                break
    changes = [c for u in updates for c in u.changes]
    assert changes[:2] == [Change("added", "a"), Change("refused", "broken.yaml")]
    assert sorted(changes[2:], key=lambda c: c.name) == [Change("removed", "a"), Change("added", "b")]
