import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from muster.stack import Stack, free_port


@dataclass
class ValkeyServer:
    stack: Stack
    port: int
    url: str

    def stop(self) -> None:
        """SIGKILL: the server is gone at once, as when its node dies."""
        self.stack.stop_child(self.stack.children[0], signal.SIGKILL)

    def start(self) -> None:
        self.stack.valkey(self.port)


@pytest.fixture
def valkey_server(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A real valkey-server on 127.0.0.1, this test's alone, to stop and start (the suite's `valkey` is a client
    of a server the session shares)."""
    stack = Stack(tmp_path, log=lambda m: print(m, file=sys.stderr))
    port = free_port()
    try:
        yield ValkeyServer(stack, port, stack.valkey(port))
    finally:
        stack.stop()
