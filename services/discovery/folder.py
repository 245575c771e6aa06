"""The folder source: MCPServer YAML files in one directory, polled for changes."""

import logging
from pathlib import Path

import yaml

from shared.mcpserver import InvalidResource, MCPServer, load_yaml, parse

logger = logging.getLogger(__name__)


class Folder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self.errors: dict[str, str] = {}

    def _snapshot(self) -> tuple[tuple[str, int, int], ...]:
        try:
            files = sorted(p for p in self.path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        except FileNotFoundError:
            return ()
        stamp = []
        for p in files:
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            stamp.append((p.name, st.st_mtime_ns, st.st_size))
        return tuple(stamp)

    def changed(self) -> bool:
        return self._snapshot() != self._stamp

    def read(self) -> dict[str, MCPServer]:
        """Every valid MCPServer in the folder; invalid documents are reported in `errors` and skipped."""
        self._stamp = self._snapshot()
        servers: dict[str, MCPServer] = {}
        errors: dict[str, str] = {}
        for name, _, _ in self._stamp:
            file = self.path / name
            try:
                documents = load_yaml(file.read_text())
            except (OSError, ValueError, yaml.YAMLError) as exc:  # YAMLError: not YAML at all
                errors[name] = f"cannot read {name}: {exc}"
                continue
            for document in documents:
                try:
                    server = parse(document)
                except InvalidResource as exc:
                    errors[name] = str(exc)
                    continue
                if server.name in servers:
                    errors[name] = f"MCPServer {server.name} is defined twice; the first definition is used"
                    continue
                servers[server.name] = server
        for name, error in errors.items():
            if self.errors.get(name) != error:
                logger.error("%s", error)
        self.errors = errors
        return servers
