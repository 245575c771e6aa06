"""One upstream server as the worker holds it: its lane's room, and its connections following its record."""

import asyncio

import anyio
import pytest

from services.worker.upstream import Lane, UnknownServer, Upstream
from shared.messages import ServerRecord
from tests.conftest import StandIn
from tests.services.worker.conftest import Bench

pytestmark = pytest.mark.anyio


async def test_a_lane_has_room_for_its_limit_and_says_when_it_has_room_again() -> None:
    lane = Lane("k8s", 2)
    await lane.acquire()
    await lane.acquire()
    waiting = asyncio.ensure_future(lane.room())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    lane.release()
    with anyio.fail_after(1):
        await waiting
    assert not lane.locked()  # room() took nothing for itself
    lane.release()
    with pytest.raises(ValueError):
        lane.release()  # a bounded lane: one release per call that ran


async def test_new_connections_follow_a_changed_address_and_a_retired_server_refuses_calls(
    bench: Bench, k8s: StandIn
) -> None:
    upstream = bench.upstream(k8s)
    deadline = asyncio.get_running_loop().time() + 10
    session = await upstream.shared(b"anonymous", deadline)
    assert await upstream.shared(b"anonymous", deadline) is session  # one session per credential, reused
    upstream.configure(upstream.record.model_copy(update={"revision": 2}))
    assert await upstream.shared(b"anonymous", deadline) is session  # same address: same session
    upstream.configure(upstream.record.model_copy(update={"headers": {"X-Cluster": "k8s"}}))
    moved = await upstream.shared(b"anonymous", deadline)
    assert moved is not session and (b"X-Cluster", b"k8s") in moved.static_headers
    upstream.retire()
    with pytest.raises(UnknownServer):
        await upstream.shared(b"anonymous", deadline)


def test_an_upstream_is_made_from_its_record() -> None:
    record = ServerRecord(name="k8s", url="http://127.0.0.1:1/mcp", state="Connected")
    upstream = Upstream.of(record, 3)
    assert upstream.name == "k8s" and upstream.lane.server == "k8s" and upstream.subscriber is None
