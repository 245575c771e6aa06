"""The folder source: MCPServer YAML files in one directory, polled for changes."""

import logging
from pathlib import Path

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
        """Every valid MCPServer in the folder; what is wrong with a file is reported in `errors`, under the file's
        name, with the resource and the field, and the file's valid documents are served all the same."""
        self._stamp = self._snapshot()
        servers: dict[str, MCPServer] = {}
        errors: dict[str, str] = {}
        for name, _, _ in self._stamp:
            problems = []
            try:
                documents = load_yaml((self.path / name).read_text())
            except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not YAML
                documents, problems = [], [str(exc)]
            for document in documents:
                try:
                    server = parse(document)
                except InvalidResource as exc:
                    problems.append(str(exc))
                    continue
                if server.name in servers:
                    problems.append(f"MCPServer {server.name} is defined twice; the first definition is used")
                    continue
                servers[server.name] = server
            if problems:
                errors[name] = f"{name}: {'; '.join(problems)}"
        for name, error in errors.items():
            if self.errors.get(name) != error:
                logger.error("%s", error)
        self.errors = errors
        return servers
