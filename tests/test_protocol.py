"""Protocol fidelity through the queue: relays in both directions, cancellation, subscriptions across replicas,
untouched payloads, and both protocol generations. The upstream is the conformance fixture server."""

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPDeprecationWarning
from redis import Redis as SyncRedis

from shared import streams
from tests.conftest import HEADERS, Muster, StandIn, initialize, make_muster, mcp_client
from tests.fixtures.conformance_server import TOOLS

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.fixture_server()
        m.discovery(prefix_mode="never")
        # one call at a time per worker, one entry per read: a third call waits in the queue
        for _ in range(2):
            m.worker(MUSTER_WORKER_SERVER_CONCURRENCY="1", MUSTER_WORKER_BATCH="1")
        m.ingress()
        m.ingress()
        m.wait_tools(len(TOOLS))
        for worker in m.workers:  # both read the queue before a test counts on two calls running at once
            m.beating(worker)
        yield m


@pytest.fixture
def fixture(muster: Muster) -> StandIn:
    return muster.standins["fixture"]


def workers_running(muster: Muster) -> dict[str, Any]:
    """What each worker says it runs, holds for Valkey and has opened (its `muster status` record), and which
    worker holds which of the fixture's calls."""
    with SyncRedis.from_url(muster.valkey_url) as valkey:
        found: dict[str, Any] = {w.name: valkey.get(streams.worker_alive(w.name)) for w in muster.workers}
        queue = streams.queue("fixture").stream
        found["consumers"] = valkey.xinfo_consumers(queue, streams.GROUP_WORKERS)
        found["pending"] = valkey.xpending_range(queue, streams.GROUP_WORKERS, "-", "+", 10)
        return found


async def test_an_upstream_asking_for_sampling_mid_call_gets_the_agents_answer(muster: Muster) -> None:
    asked: list[types.CreateMessageRequestParams] = []

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant", model="test-model", content=types.TextContent(type="text", text="Paris, of course")
        )

    async with mcp_client(muster.url(0), mode="legacy", sampling_callback=sample) as client:
        result = await client.call_tool("test_sampling", {"prompt": "Capital of France?"})
    assert result.content[0].text == "LLM response: Paris, of course"
    assert asked[0].messages[0].content.text == "Capital of France?"  # type: ignore[union-attr]
    assert asked[0].max_tokens == 100


async def test_elicitation_and_roots_travel_to_the_agent_and_back(muster: Muster) -> None:
    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"response": "yes"})

    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///work", name="work")])

    async with mcp_client(
        muster.url(1), mode="legacy", elicitation_callback=elicit, list_roots_callback=roots
    ) as client:
        result = await client.call_tool("test_elicitation", {"message": "Proceed?"})
        assert result.content[0].text == 'User response: action=accept, content={"response":"yes"}'
        result = await client.call_tool("test_roots", {})
        assert json.loads(result.content[0].text) == ["file:///work"]


async def test_a_request_the_agent_cannot_answer_is_refused_for_it(muster: Muster) -> None:
    async with mcp_client(muster.url(0), mode="legacy") as client:  # declares no sampling capability
        result = await client.call_tool("test_sampling", {"prompt": "x"})
    assert "the client did not declare the sampling capability" in result.content[0].text


async def test_progress_zero_fifty_hundred_arrives_in_order(muster: Muster) -> None:
    seen: list[tuple[float, float | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total))

    async with mcp_client(muster.url(0), mode="legacy") as client:
        await client.call_tool("test_tool_with_progress", {}, progress_callback=progress)
    assert seen == [(0, 100), (50, 100), (100, 100)]


async def test_log_messages_arrive_in_order_and_respect_the_sessions_level(muster: Muster) -> None:
    logs: list[Any] = []

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with mcp_client(muster.url(1), mode="legacy", logging_callback=log) as client:
        await client.call_tool("test_tool_with_logging", {})
        assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]
        with pytest.warns(MCPDeprecationWarning):  # logging is deprecated in 2026-07-28, still in this session's
            await client.set_logging_level("warning")
        await client.call_tool("test_tool_with_logging", {})
    assert len(logs) == 3  # info is below warning


async def test_a_cancelled_long_call_stops_at_the_upstream(muster: Muster, fixture: StandIn) -> None:
    before = fixture.fixture_stats()["stats"].get("cancelled test_slow", 0)
    started = time.monotonic()
    async with mcp_client(muster.url(0), mode="legacy") as client:
        with anyio.move_on_after(1.0):
            await client.call_tool("test_slow", {"seconds": 30})
        with anyio.fail_after(5):
            while fixture.fixture_stats()["stats"].get("cancelled test_slow", 0) == before:
                await anyio.sleep(0.05)
    assert time.monotonic() - started < 6
    assert fixture.fixture_stats()["running"] == 0


async def test_a_call_whose_session_the_agent_ends_stops_and_is_not_run_again(muster: Muster, fixture: StandIn) -> None:
    """An agent that ends its session (DELETE) while a call runs, without cancelling it: nobody can receive the
    outcome. The call stops at the upstream, and is not sent again on a new upstream session (it is safe to repeat,
    and the end of its upstream session looked like a failure): that ran the tool again for nobody and held the
    worker's lane for the rest of the call's deadline."""
    before = fixture.fixture_stats()["stats"]
    session = initialize(muster.url(0))
    headers = {**HEADERS, "Mcp-Session-Id": session}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    body["params"] = {"name": "test_slow", "arguments": {"seconds": 20}}

    def counted(what: str) -> int:
        return int(fixture.fixture_stats()["stats"].get(f"{what} test_slow", 0) - before.get(f"{what} test_slow", 0))

    async with httpx.AsyncClient(timeout=30) as http, anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(http.post, muster.url(0), headers=headers, json=body))
        with anyio.fail_after(15):
            while counted("started") < 1:
                await anyio.sleep(0.05)
        assert (await http.delete(muster.url(0), headers=headers)).status_code == 200
        with anyio.fail_after(5):
            while counted("cancelled") < 1:
                await anyio.sleep(0.05)
        await anyio.sleep(2.0)  # a call sent again was running within 0.3 s
        assert counted("started") == 1 and fixture.fixture_stats()["running"] == 0
        tg.cancel_scope.cancel()


async def test_a_cancelled_queued_call_never_runs(muster: Muster, fixture: StandIn) -> None:
    stats = fixture.fixture_stats()["stats"]
    started_before = stats.get("started test_slow", 0)
    async with (
        mcp_client(muster.url(0), mode="legacy") as a,
        mcp_client(muster.url(1), mode="legacy") as b,
        anyio.create_task_group() as tg,
    ):
        # both workers take one slow call each; a third call can only wait in the queue (each first call opens
        # its agent's upstream session, which on a loaded machine took more than 5 s once)
        tg.start_soon(a.call_tool, "test_slow", {"seconds": 4})
        tg.start_soon(b.call_tool, "test_slow", {"seconds": 4})
        deadline = time.monotonic() + 15
        while fixture.fixture_stats()["running"] < 2:
            assert time.monotonic() < deadline, f"not both running; the workers say {workers_running(muster)}"
            await anyio.sleep(0.02)
        with anyio.move_on_after(0.5):
            await a.call_tool("test_slow", {"seconds": 0.1})
    await anyio.sleep(1.0)  # the queued call's turn has come and gone
    stats = fixture.fixture_stats()["stats"]
    assert stats["started test_slow"] == started_before + 2
    assert stats.get("finished test_slow", 0) >= 2


async def test_resource_updates_reach_the_subscriber_through_the_replica_that_holds_its_stream(
    muster: Muster, fixture: StandIn
) -> None:
    session = initialize(muster.url(0))
    headers = {**HEADERS, "Mcp-Session-Id": session}
    uri = "test://watched-resource"

    def rpc(n: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": n, "method": method, "params": params}
        result: dict[str, Any] = httpx.post(muster.url(0), headers=headers, json=body).json()
        return result

    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", muster.url(1), headers={**headers, "Accept": "text/event-stream"}) as stream,
    ):
        lines = stream.aiter_lines()
        assert rpc(1, "resources/subscribe", {"uri": uri}) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        with anyio.fail_after(5):  # discovery subscribes upstream on the server's listening session
            while fixture.fixture_stats()["subscribers"].get(uri, 0) < 1:
                await anyio.sleep(0.05)
        assert fixture.update(uri) >= 1
        with anyio.fail_after(3):
            async for line in lines:
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    break
        assert event == {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}
        assert rpc(2, "resources/unsubscribe", {"uri": uri})["result"] == {}
        with anyio.fail_after(5):
            while fixture.fixture_stats()["subscribers"].get(uri, 0) > 0:
                await anyio.sleep(0.05)


async def test_payloads_arrive_exactly_as_the_upstream_sent_them(muster: Muster, fixture: StandIn) -> None:
    def exchange(url: str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        session = initialize(url)
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        response = httpx.post(url, headers={**HEADERS, "Mcp-Session-Id": session}, json=body)
        text = response.text
        if response.headers["content-type"].startswith("text/event-stream"):
            text = [line[6:] for line in text.splitlines() if line.startswith("data: ") and line[6:]][-1]
        result: dict[str, Any] = json.loads(text)["result"]
        return result

    direct, through = fixture.url, muster.url(1)
    tools = {t["name"]: t for t in exchange(through, "tools/list")["tools"]}
    for tool in exchange(direct, "tools/list")["tools"]:
        assert tools[tool["name"]] == tool
    assert tools["json_schema_2020_12_tool"]["inputSchema"]["$defs"]["address"]["properties"]["city"] == {
        "type": "string"
    }
    for name in ("test_image_content", "test_audio_content", "test_multiple_content_types", "test_structured"):
        assert exchange(through, "tools/call", {"name": name}) == exchange(direct, "tools/call", {"name": name})
    structured = exchange(through, "tools/call", {"name": "test_structured"})
    assert structured["structuredContent"] == {"a": 1, "nested": {"b": [1, 2.5, "x", None, True]}}
    assert structured["_meta"] == {"io.example/trace": "abc"}
    binary = {"uri": "test://static-binary"}
    assert exchange(through, "resources/read", binary) == exchange(direct, "resources/read", binary)
    complete = {
        "ref": {"type": "ref/prompt", "name": "test_prompt_with_arguments"},
        "argument": {"name": "arg1", "value": "par"},
    }
    assert exchange(through, "completion/complete", complete)["completion"]["values"] == ["paris", "park", "party"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_both_protocol_generations_work(muster: Muster, mode: str) -> None:
    async with mcp_client(muster.url(0), mode=mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        names = {t.name for t in (await client.list_tools()).tools}
        assert "test_simple_text" in names
        result = await client.call_tool("test_simple_text", {})
        assert result.content[0].text == "This is a simple text response for testing."
        seen: list[float] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            seen.append(value)

        await client.call_tool("test_tool_with_progress", {}, progress_callback=progress)
        assert seen == [0, 50, 100]
        text = (await client.read_resource("test://static-text")).contents[0]
        assert text.text == "This is the content of the static text resource."
        prompt = await client.get_prompt("test_prompt_with_arguments", {"arg1": "hello", "arg2": "world"})
        assert prompt.messages[0].content.text == "Prompt with arguments: arg1='hello', arg2='world'"
