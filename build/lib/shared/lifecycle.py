"""Running a service's main coroutine until SIGINT or SIGTERM, then letting it clean up."""

import asyncio
import contextlib
import os
import secrets
import signal
import socket
from collections.abc import Coroutine
from typing import Any

import uvloop


def instance_id() -> str:
    """host-pid-random: unique per process start, readable in CLIENT LIST, consumer groups and logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def run(main: Coroutine[Any, Any, None]) -> None:
    async def supervised() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    uvloop.run(supervised())
