"""Background tasks are waited for within a bound, those spawned while waiting too."""

import asyncio

import pytest

from shared.lifecycle import Background

pytestmark = pytest.mark.anyio


async def test_wait_also_waits_for_tasks_spawned_meanwhile() -> None:
    background = Background()
    done: list[str] = []

    async def later(name: str) -> None:
        await asyncio.sleep(0.1)
        done.append(name)

    async def first() -> None:
        await later("first")
        background.spawn(later("spawned meanwhile"))  # as a worker's held call starts when a running one ends

    background.spawn(first())
    await background.wait(5)
    assert done == ["first", "spawned meanwhile"] and not background.tasks


async def test_wait_gives_up_after_its_bound() -> None:
    background = Background()
    background.spawn(asyncio.sleep(10))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await background.wait(0.2)
    assert 0.15 < loop.time() - started < 1 and len(background.tasks) == 1
    background.cancel()
    await asyncio.sleep(0)
