"""How a service lives: its identity, the tasks it keeps in the background, and (for a service that serves no
HTTP) running its lifespan until SIGINT or SIGTERM.

Every service's `create_app(settings)` returns an application whose lifespan builds its resources and closes
them: the ingress an ASGI app (run by uvicorn), the worker a FastStream app, discovery a `Service`.
"""

import asyncio
import contextlib
import gc
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def freeze_heap() -> None:
    """Moves everything alive now (modules, classes, the application) out of the garbage collector's sight: a full
    collection otherwise walks those few hundred thousand objects each time, a 30-100 ms pause of the event loop
    under load (measured in the ingress during a 5,000-call flood), for objects that live as long as the process.
    Called once a service has built its application, before it serves."""
    gc.collect()
    gc.freeze()


def instance_id() -> str:
    """host-pid-random: unique per process start, readable in CLIENT LIST, consumer groups and logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


async def woken(event: asyncio.Event, seconds: float | None) -> None:
    """Returns when `event` is set or after `seconds` (None: no bound), whichever comes first. asyncio.timeout, not
    wait_for: Python 3.11's wait_for loses a cancellation that comes as the event is set, and a loop around it runs
    on."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """`awaitable`'s result, or TimeoutError after `seconds` (for asyncio.gather, which takes awaitables)."""
    async with asyncio.timeout(seconds):
        return await awaitable


class Background:
    """Tasks nobody awaits: kept referenced until they are done (the event loop holds only weak references), and
    waited for, within a bound, when the service stops."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def wait(self, seconds: float) -> None:
        """Until every task is done, those spawned meanwhile too, or `seconds` have passed. (A worker's drain: calls
        it had taken but not started start as others end, and were left running when only the first were awaited.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self.tasks), timeout=left)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


class Service:
    """A service without an HTTP server. Its lifespan builds its resources, starts its work as one task and
    yields it; the service runs until it is told to stop or the work ends (an error in it ends the process)."""

    def __init__(self, lifespan: Callable[[], AbstractAsyncContextManager["asyncio.Task[None]"]]) -> None:
        self.lifespan = lifespan

    async def serve(self, stop: asyncio.Event) -> None:
        async with self.lifespan() as work:
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if work.done():
                work.result()

    def run(self) -> None:
        """Serves until SIGINT or SIGTERM, then leaves the lifespan, which stops the work and closes resources."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await self.serve(stop)

        uvloop.run(main())
