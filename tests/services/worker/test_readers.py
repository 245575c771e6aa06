"""The upkeep of the queues' readers: a reader that is still starting is not taken for a stopped one.

Two readers of one server's queue in one worker take calls its lane has no room for: they wait in that worker's
pending list while other workers idle (a call waited 4 s so in a clean-clone run, beside an idle worker).
"""

import asyncio
from types import SimpleNamespace

import pytest
from faststream.redis import RedisBroker
from redis.asyncio import Redis

from services.worker.app import Worker
from services.worker.config import WorkerSettings
from services.worker.upstream import Upstream
from shared.messages import ServerRecord

pytestmark = pytest.mark.anyio


async def test_a_reader_still_starting_is_not_started_a_second_time(valkey_url: str, valkey: Redis) -> None:
    worker = Worker(WorkerSettings(valkey_url=valkey_url, id="worker-under-test"), RedisBroker(valkey_url))
    worker.client = valkey
    worker.telemetry = SimpleNamespace(initialized=lambda *_: None)  # type: ignore[assignment]
    worker.reclaimer = SimpleNamespace(adopt=lambda _: None)  # type: ignore[assignment]
    started: list[str] = []

    async def slow_start(upstream: Upstream) -> None:  # the fault: a reader that takes a while to start
        started.append(upstream.name)
        await asyncio.sleep(0.3)
        upstream.subscriber = SimpleNamespace(running=True)

    worker._subscribe = slow_start  # type: ignore[method-assign]
    record = ServerRecord(name="k8s", url="http://127.0.0.1:9/mcp", state="Connected")
    adding = asyncio.create_task(worker._add(record))
    await asyncio.sleep(0.05)
    upstream = worker.servers["k8s"]
    assert not upstream.reading, "its reader is still starting"
    await worker._restart(upstream)  # what the upkeep does with a server whose queue has no running reader
    await adding
    assert started == ["k8s"] and upstream.reading
