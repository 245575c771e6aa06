"""The status writer against the test API server: fields and conditions, one write per change, conflicts, leader."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from kubernetes.aio import client

from services.discovery.status import ServerStatus
from services.discovery.status_writer import StatusWriter
from tests.kube import FakeApi, mcpserver

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
STATUS_PATH = "/mcpservers/a/status"


def connected(**changes: Any) -> ServerStatus:
    base = ServerStatus(
        namespace="muster",
        name="a",
        state="Connected",
        last_connected=NOW,
        tool_count=12,
        observed_generation=1,
        protocol_version="2025-11-25",
        server_info={"name": "mcp-kubernetes", "version": "0.0.1"},
    )
    return base.model_copy(update=changes)


def failed(failures: int) -> ServerStatus:
    return connected(state="Failed", last_error="connection refused", consecutive_failures=failures, tool_count=0)


@asynccontextmanager
async def writing(kube: client.ApiClient, is_leader: Callable[[], bool] = lambda: True) -> AsyncIterator[StatusWriter]:
    writer = StatusWriter(kube, is_leader, retry_seconds=0.05, min_interval=0, clock=lambda: NOW)
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def settle(writer: StatusWriter) -> None:
    with anyio.fail_after(5):
        await writer.drained()


async def test_every_status_field_and_condition_is_written_through_the_status_subresource(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("a"))
    async with writing(kube) as writer:
        writer.submit(connected())
        await settle(writer)
    obj = api.get("a")
    status = obj["status"]
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "state": "Connected",
        "lastConnected": "2026-11-02T09:30:00Z",
        "consecutiveFailures": 0,
        "toolCount": 12,
        "observedGeneration": 1,
        "protocolVersion": "2025-11-25",
        "serverInfo": {"name": "mcp-kubernetes", "version": "0.0.1"},
    }
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "Ready": ("True", "Connected"),
        "HandshakeSucceeded": ("True", "Initialized"),
        "LoginRequired": ("False", "NotRequired"),
    }
    assert all(c["message"] and c["lastTransitionTime"] == "2026-11-02T09:30:00Z" for c in status["conditions"])
    assert obj["metadata"]["generation"] == 1 and obj["spec"] == mcpserver("a")["spec"]
    assert api.count("update", STATUS_PATH) == 1


async def test_a_flapping_server_costs_one_write_per_change_and_a_repeated_status_none(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("a"))
    async with writing(kube) as writer:
        for _ in range(5):
            writer.submit(connected())
            await settle(writer)
        assert api.count("update", STATUS_PATH) == 1

        for flap in range(1, 4):
            writer.submit(failed(flap))
            await settle(writer)
            writer.submit(failed(flap))
            await settle(writer)
            writer.submit(connected())
            await settle(writer)
        assert api.count("update", STATUS_PATH) == 1 + 3 * 2

        # Faster than writes land: submissions coalesce, and the last one is what stays.
        for flap in range(4, 24):
            writer.submit(failed(flap))
            writer.submit(connected())
        writer.submit(failed(99))
        await settle(writer)
    assert api.count("update", STATUS_PATH) <= 1 + 3 * 2 + 41
    assert api.get("a")["status"]["consecutiveFailures"] == 99
    assert api.count("get", STATUS_PATH) == 1, "the object is read once; later writes use the version they got back"


async def test_a_restarted_writer_finds_the_status_unchanged_and_writes_nothing(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("a"))
    async with writing(kube) as writer:
        writer.submit(failed(3))
        await settle(writer)
    async with writing(kube) as restarted:
        restarted.submit(failed(3))
        await settle(restarted)
    assert api.count("update", STATUS_PATH) == 1


async def test_a_conflict_is_retried_on_a_fresh_read_and_keeps_the_new_spec(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("a"))
    async with writing(kube) as writer:
        writer.submit(connected())
        await settle(writer)
        api.patch_spec("a", {"timeout": 7})  # the writer's copy is stale now
        writer.submit(connected(observed_generation=2, tool_count=3))
        await settle(writer)
    obj = api.get("a")
    assert obj["spec"]["timeout"] == 7 and obj["metadata"]["generation"] == 2
    assert obj["status"]["observedGeneration"] == 2 and obj["status"]["toolCount"] == 3
    assert api.count("update", STATUS_PATH) == 3, "the first write, the conflicting one, the retried one"
    assert api.count("get", STATUS_PATH) == 2


async def test_conditions_keep_their_transition_time_while_their_status_holds(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("a"))
    clock = [NOW]
    writer = StatusWriter(kube, lambda: True, clock=lambda: clock[0])

    def times() -> dict[str, str]:
        return {c["type"]: c["lastTransitionTime"] for c in api.get("a")["status"]["conditions"]}

    assert await writer.write(connected())
    clock[0] = later = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    assert await writer.write(connected(tool_count=13))
    assert set(times().values()) == {"2026-11-02T09:30:00Z"}
    assert await writer.write(connected(exposed=False, last_error="tool name 'x' collides with server 'b'"))
    assert times() == {
        "Ready": later.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "HandshakeSucceeded": "2026-11-02T09:30:00Z",
        "LoginRequired": "2026-11-02T09:30:00Z",
    }
    assert not await writer.write(connected(exposed=False, last_error="tool name 'x' collides with server 'b'"))


async def test_a_process_that_does_not_lead_writes_nothing(api: FakeApi, kube: client.ApiClient) -> None:
    api.create(mcpserver("a"))
    leading = [False]
    async with writing(kube, lambda: leading[0]) as writer:
        writer.submit(connected())
        await settle(writer)
        assert api.count("update") == 0 and api.count("get") == 0
        leading[0] = True
        writer.submit(connected())
        await settle(writer)
        assert api.count("update", STATUS_PATH) == 1
        leading[0] = False
        writer.submit(failed(1))
        await settle(writer)
    assert api.count("update", STATUS_PATH) == 1
    assert api.get("a")["status"]["state"] == "Connected"


async def test_a_failed_write_is_tried_again_and_a_deleted_server_is_dropped(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("a"))
    api.faults(rules=[{"verb": "update", "match": STATUS_PATH, "status": 503, "count": 2}])
    async with writing(kube) as writer:
        writer.submit(connected())
        await settle(writer)
        assert api.get("a")["status"]["state"] == "Connected"
        assert api.count("update", STATUS_PATH) == 3
        api.delete("a")
        writer.submit(failed(1))
        await settle(writer)
    assert api.count("update", STATUS_PATH) == 4  # the one write that found the object gone


async def test_a_server_s_status_is_written_at_most_once_per_interval_and_the_newest_one_wins(
    api: FakeApi, kube: client.ApiClient
) -> None:
    api.create(mcpserver("a"))
    api.create(mcpserver("b"))
    writer = StatusWriter(kube, lambda: True, min_interval=1.0, clock=lambda: NOW)
    task = asyncio.create_task(writer.run())
    try:
        started = asyncio.get_running_loop().time()
        writer.submit(connected())
        await settle(writer)
        for flap in range(1, 40):  # a server flapping every 10 ms for 0.4 s
            writer.submit(failed(flap) if flap % 2 else connected())
            if flap == 20:
                writer.submit(connected(name="b"))  # another server's status does not wait behind a's
            if flap == 35:  # 150 ms later, while a's next write is still not due
                b_written = api.get("b").get("status") is not None
            await asyncio.sleep(0.01)
        await settle(writer)
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert 2 <= api.count("update", "/mcpservers/a/status") <= 1 + elapsed / 1.0 + 1
    assert api.get("a")["status"]["consecutiveFailures"] == 39, "the last submission is what stays"
    assert b_written


async def test_the_writer_stops_when_cancelled_at_the_moment_it_is_woken() -> None:
    """Python 3.11's asyncio.wait_for loses a cancellation that arrives as what it waits for is done, and a loop
    around it runs on: discovery did not stop (a clean-clone run hung for good in its teardown). Its waits are
    asyncio.timeout blocks, which keep the cancellation; ruff bans asyncio.wait_for."""
    async with client.ApiClient(client.Configuration(host="http://127.0.0.1:1")) as api:
        writer = StatusWriter(api, lambda: True)
        writer._pending[("muster", "a")] = None  # type: ignore[assignment]  # due in a minute: never written here
        writer._not_before[("muster", "a")] = time.monotonic() + 60
        task = asyncio.create_task(writer.run())
        await asyncio.sleep(0.05)  # waiting, with a time bound, to be woken
        writer._wake.set()
        task.cancel()  # in the same turn of the loop as the wake-up
        done, _ = await asyncio.wait({task}, timeout=2)
        assert task in done and task.cancelled()
