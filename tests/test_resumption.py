"""muster's own event streams resume (SEP-1699 on muster's side): every event has an id, and a GET with
Last-Event-ID on ANY replica delivers what the dropped stream still owed, once: nothing lost, nothing twice."""

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import HEADERS, Muster, initialize, make_muster
from tests.fixtures.raw_server import ODD_RESULT

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.raw_server()
        m.discovery(prefix_mode="always")
        m.worker()
        m.ingress()
        m.ingress()
        m.wait_tools({"x_raw_steps"}, n=0)
        m.wait_tools({"x_raw_steps"}, n=1)
        yield m


def steps(request_id: int, pause: float) -> dict[str, Any]:
    arguments = {"pause": pause}
    params = {"name": "x_raw_steps", "arguments": arguments, "_meta": {"progressToken": "t"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    """Server-sent events as {field: value}, data lines joined."""
    event: dict[str, str] = {}
    async for line in lines:
        if not line:
            if event:
                yield event
            event = {}
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        event[name] = event[name] + "\n" + value if name in event else value


async def test_a_post_stream_dropped_mid_call_resumes_on_the_other_replica_with_nothing_lost_or_twice(
    muster: Muster,
) -> None:
    session = initialize(muster.url(0))
    headers = {**HEADERS, "Mcp-Session-Id": session}
    async with httpx.AsyncClient(timeout=30) as http:
        seen: list[dict[str, str]] = []
        async with http.stream("POST", muster.url(0), headers=headers, json=steps(1, 1.0)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event in events(response.aiter_lines()):
                seen.append(event)
                if event.get("data"):
                    break  # the connection drops after the first notification
        priming, first = seen
        assert priming["data"] == "" and priming["retry"] == "500" and priming["id"]
        assert json.loads(first["data"])["params"]["progress"] == 1
        resumed: list[dict[str, str]] = []
        with anyio.fail_after(10):
            resume = {**headers, "Accept": "text/event-stream", "Last-Event-ID": first["id"]}
            async with http.stream("GET", muster.url(1), headers=resume) as response:
                assert response.status_code == 200
                async for event in events(response.aiter_lines()):
                    if event.get("data"):
                        resumed.append(event)
    assert [json.loads(e["data"]).get("params", {}).get("progress") for e in resumed] == [2, None]
    assert resumed[-1]["data"].encode() == b'{"jsonrpc":"2.0","id":1,"result":' + ODD_RESULT.replace(b"\n", b"") + b"}"
    ids = [priming["id"], first["id"], *(e["id"] for e in resumed)]
    assert len(set(ids)) == len(ids) and all(ids)


async def test_a_stream_resumed_from_its_priming_event_gets_every_event_once(muster: Muster) -> None:
    session = initialize(muster.url(1))
    headers = {**HEADERS, "Mcp-Session-Id": session}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", muster.url(1), headers=headers, json=steps(2, 0.2)) as response:
            priming = await anext(events(response.aiter_lines()))
        with anyio.fail_after(10):
            resume = {**headers, "Accept": "text/event-stream", "Last-Event-ID": priming["id"]}
            async with http.stream("GET", muster.url(0), headers=resume) as response:
                data = [json.loads(e["data"]) async for e in events(response.aiter_lines()) if e.get("data")]
    assert [d.get("params", {}).get("progress") for d in data] == [1, 2, None]
    assert data[-1]["id"] == 2 and "result" in data[-1]


async def test_a_stream_cannot_be_resumed_by_another_session_or_after_it_is_gone(muster: Muster) -> None:
    owner, other = initialize(muster.url(0)), initialize(muster.url(0))
    async with httpx.AsyncClient(timeout=30) as http:
        headers = {**HEADERS, "Mcp-Session-Id": owner}
        async with http.stream("POST", muster.url(0), headers=headers, json=steps(3, 0.05)) as response:
            priming = await anext(events(response.aiter_lines()))
        for session, last in ((other, priming["id"]), (owner, "p" + "0" * 24 + ".1")):
            get = {"Accept": "text/event-stream", "Mcp-Session-Id": session, "Last-Event-ID": last}
            response = await http.get(muster.url(1), headers=get)
            assert response.status_code == 404
            assert response.json()["error"]["message"].startswith("Not Found: no stream of this session")


class DropFirstStream(httpx2.AsyncBaseTransport):
    """A load balancer whose first event stream breaks after one event: requests go to the first replica,
    the client's resumption to the second."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.inner = httpx2.AsyncHTTPTransport()
        self.dropped = 0
        self.resumed_at: list[int] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        resuming = "last-event-id" in request.headers
        port = self.ports[1] if resuming else self.ports[0]
        if resuming:
            self.resumed_at.append(port)
        request.url = request.url.copy_with(port=port)
        response = await self.inner.handle_async_request(request)
        streams = response.headers.get("content-type", "").startswith("text/event-stream")
        if request.method == "POST" and streams and not self.dropped:
            self.dropped += 1
            return httpx2.Response(
                response.status_code, headers=response.headers, stream=_FirstEvents(response), request=request
            )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _FirstEvents(httpx2.AsyncByteStream):
    """The stream up to its first event with data, then the end, as a dropped connection looks."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffered = b""
        async for chunk in self.response.aiter_raw():
            buffered += chunk
            if b"\ndata: {" in buffered and buffered.endswith(b"\n\n"):
                yield buffered
                return
        yield buffered

    async def aclose(self) -> None:
        await self.response.aclose()


async def test_the_official_client_resumes_a_dropped_call_through_the_other_replica(muster: Muster) -> None:
    transport = DropFirstStream(muster.ingress_ports)
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with (
        httpx2.AsyncClient(transport=transport, timeout=30) as http,
        Client(streamable_http_client(muster.url(0), http_client=http), mode="legacy") as client,
    ):
        with anyio.fail_after(20):
            result = await client.call_tool("x_raw_steps", {"pause": 0.5}, progress_callback=on_progress)
    assert transport.dropped == 1 and transport.resumed_at == [muster.ingress_ports[1]]
    assert result.structured_content is not None and result.structured_content["dup"] == 2
    assert seen == [1, 2]


async def test_a_get_stream_resumed_on_another_replica_replays_what_the_dropped_one_sent(muster: Muster) -> None:
    session = initialize(muster.url(0))
    get = {"Accept": "text/event-stream", "Mcp-Session-Id": session}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("GET", muster.url(0), headers=get) as response:
            stream = events(response.aiter_lines())
            priming = await anext(stream)
            assert priming["id"].startswith("g") and priming["data"] == ""
            muster.register("raw-too", muster.standins["raw"].url)  # the tool list changes: an event for every stream
            with anyio.fail_after(15):
                changed = await anext(stream)
        assert json.loads(changed["data"])["method"] == "notifications/tools/list_changed"
        # the client lost `changed` with its connection: it resumes from the priming event, on the other replica
        with anyio.fail_after(10):
            async with http.stream("GET", muster.url(1), headers={**get, "Last-Event-ID": priming["id"]}) as response:
                stream = events(response.aiter_lines())
                replayed = await anext(stream)
                fresh = await anext(stream)
    assert (replayed["id"], replayed["data"]) == (changed["id"], changed["data"])
    assert fresh["id"].startswith("g") and fresh["data"] == "" and fresh["id"] != priming["id"]  # a new stream goes on
    (muster.servers / "raw-too.yaml").unlink()
