"""What discovery should serve, from wherever it is declared: the shape both sources (a folder, Kubernetes) share.

A source is an async iterator of `Update`s. The first update is the complete desired state, and nothing comes
before it: a consumer that applies updates in order never removes a server because a source had not read
everything yet. Each later update carries the changes since the one before it, computed by `diff`, so that both
sources report changes the same way.
"""

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

from services.discovery.folder import Folder
from shared.mcpserver import MCPServer

ChangeKind = Literal["added", "modified", "removed", "refused"]


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind  # refused: a resource is invalid (again, or differently); its message is in Desired.errors
    name: str  # the server's name; for a refusal, the resource's key in Desired.errors


@dataclass(frozen=True)
class Desired:
    """The servers to serve by name, and every resource that was refused, with a message naming it and the field."""

    servers: Mapping[str, MCPServer] = field(default_factory=lambda: MappingProxyType({}))
    errors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Update:
    desired: Desired
    changes: tuple[Change, ...]


class Source(Protocol):
    def updates(self) -> AsyncIterator[Update]: ...


def _version(server: MCPServer) -> object:
    # The resourceVersion is left out on purpose: status writes change it, and they are not changes of the server.
    return (server.spec, server.metadata.generation)


def diff(old: Desired, new: Desired) -> tuple[Change, ...]:
    changes: list[Change] = []
    for name in sorted(old.servers.keys() | new.servers.keys()):
        before, after = old.servers.get(name), new.servers.get(name)
        if before is None:
            changes.append(Change("added", name))
        elif after is None:
            changes.append(Change("removed", name))
        elif _version(before) != _version(after):
            changes.append(Change("modified", name))
    for key in sorted(new.errors):
        if old.errors.get(key) != new.errors[key]:
            changes.append(Change("refused", key))
    return tuple(changes)


def settle(old: Desired, new: Desired) -> Desired:
    """`new`, keeping the objects of `old` for servers that did not change, so that equal states compare equal."""
    servers = {
        name: old.servers[name] if name in old.servers and _version(old.servers[name]) == _version(s) else s
        for name, s in new.servers.items()
    }
    return Desired(MappingProxyType(servers), MappingProxyType(dict(new.errors)))


@dataclass
class FolderSource:
    """The folder of MCPServer YAML files (services/discovery/folder.py), polled, as a `Source`."""

    folder: Folder
    poll_seconds: float = 0.25

    async def updates(self) -> AsyncIterator[Update]:
        last: Desired | None = None
        while True:
            if last is None or self.folder.changed():
                read = Desired(MappingProxyType(self.folder.read()), MappingProxyType(self.folder.errors))
                current = settle(last or Desired(), read)
                changes = diff(last or Desired(), current)
                if last is None or changes:
                    yield Update(current, changes)
                last = current
            await asyncio.sleep(self.poll_seconds)
