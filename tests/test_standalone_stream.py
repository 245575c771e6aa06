"""Server->client traffic that is not on the call's own stream: the fixture servers' unrelated_* tools send their
requests (sampling, elicitation, roots/list) and notifications (logging, progress) on the session's standalone
GET stream, and answer a notifications/roots/list_changed with a roots/list there, as servers written with the
TypeScript SDK (and the Python SDK, without a related request id) do.

Every exchange runs with both clients: the official Python client and the TypeScript SDK client harness
(tests/conformance/ts_client.cjs), each bounded by EXCHANGE_SECONDS, directly against each fixture server and
through muster. Through muster, each agent session has its own upstream session, whose GET stream one worker
holds and delivers to the agent (services/worker/listeners.py, standalone.py); the exchanges through muster run
concurrently in the module's fixture, so that a hang would cost one bound, not one each.
"""

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest

from tests.conformance import tools
from tests.conftest import Muster, StandIn, make_muster, mcp_client

pytestmark = [
    pytest.mark.slow,
    # roots, logging and sampling are deprecated as of 2026-07-28; these tests exercise them on purpose
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

# A direct exchange takes well under a second (plus about one for Node to start the harness).
EXCHANGE_SECONDS = 8.0
SERVERS = {"python-fixture": "pyfixture", "ts-fixture": "tsfixture"}  # fixture -> its name (and prefix) in muster
CLIENTS = ("python-client", "ts-client")
KINDS = ("sampling", "elicitation", "roots", "log", "progress", "roots-after-list-changed")
SAMPLED = "canned sampling answer"
ELICITED = {"response": "canned elicitation answer"}


@dataclass(frozen=True)
class Exchange:
    """What one client saw of one kind of unrelated traffic: its events, and whether they are what was due."""

    events: list[dict[str, Any]]
    seconds: float
    failure: str | None  # None: everything due arrived


def verdict(kind: str, events: list[dict[str, Any]], roots_changed: list[Any], root: str) -> str | None:
    """Why the events are not what a working exchange of this kind produces, or None."""
    results = [e["result"] for e in events if e["event"] == "result"]
    text = results[0]["content"][0].get("text") if results else None
    notified = [e["params"] for e in events if e["event"] == "notification"]
    if kind == "sampling":
        due = f"LLM response: {SAMPLED}"
    elif kind == "elicitation":
        due = f"User response: action=accept, content={json.dumps(ELICITED, separators=(',', ':'))}"
    elif kind == "roots":
        due = json.dumps([root])
    elif kind == "log":
        arrived = any(p.get("data") == "unrelated log" for p in notified)
        return None if arrived else f"no notifications/message arrived (call: {text!r})"
    elif kind == "progress":
        arrived = any(p.get("message") == "progress on the standalone stream" for p in notified)
        return None if arrived else f"no notifications/progress arrived (call: {text!r})"
    else:
        answered = {"roots": [root]} in roots_changed
        return None if answered else f"the server's roots/list got no answer: {roots_changed[-3:]}"
    return None if text == due else f"call answered {text!r}, due {due!r}"


async def roots_changed_of(server: StandIn) -> list[Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/_fixture/stats")
    found: list[Any] = response.json()["roots_changed"]
    return found


async def await_roots_answer(server: StandIn, root: str) -> list[Any]:
    """The fixture's record of roots/list answers, once it holds this root (the caller bounds the wait)."""
    while {"roots": [root]} not in (found := await roots_changed_of(server)):
        await anyio.sleep(0.05)
    return found


async def python_client(url: str, tool: str, kind: str, root: str, server: StandIn) -> Exchange:
    events: list[dict[str, Any]] = []
    roots_changed: list[Any] = []

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        events.append({"event": "request", "method": "sampling/createMessage"})
        return types.CreateMessageResult(
            role="assistant", model="canned-model", content=types.TextContent(type="text", text=SAMPLED)
        )

    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        events.append({"event": "request", "method": "elicitation/create"})
        return types.ElicitResult(action="accept", content=ELICITED)

    async def roots(context: Any) -> types.ListRootsResult:
        events.append({"event": "request", "method": "roots/list"})
        return types.ListRootsResult(roots=[types.Root(uri=root, name="canned")])

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        events.append({"event": "notification", "method": "notifications/message", "params": {"data": params.data}})

    async def progress(done: float, total: float | None, message: str | None) -> None:
        events.append({"event": "notification", "method": "notifications/progress", "params": {"message": message}})

    started = time.monotonic()
    try:
        with anyio.fail_after(EXCHANGE_SECONDS):
            async with mcp_client(
                url,
                mode="legacy",
                sampling_callback=sample,
                elicitation_callback=elicit,
                list_roots_callback=roots,
                logging_callback=log,
            ) as client:
                if kind == "roots-after-list-changed":
                    await client.send_roots_list_changed()
                    roots_changed = await await_roots_answer(server, root)
                else:
                    result = await client.call_tool(tool, {}, progress_callback=progress)
                    events.append({"event": "result", "result": result.model_dump(mode="json", by_alias=True)})
                    while verdict(kind, events, [], root) is not None and kind in ("log", "progress"):
                        await anyio.sleep(0.05)  # a notification on the other stream may come after the result
    except TimeoutError:
        seconds = time.monotonic() - started
        why = verdict(kind, events, roots_changed or await roots_changed_of(server), root)
        return Exchange(events, seconds, f"no outcome within {EXCHANGE_SECONDS:.0f} s: {why}")
    return Exchange(events, time.monotonic() - started, verdict(kind, events, roots_changed, root))


async def ts_client(url: str, tool: str, kind: str, root: str, server: StandIn) -> Exchange:
    argv = ["--url", url, "--timeout", str(EXCHANGE_SECONDS), "--root", root]
    if kind == "roots-after-list-changed":
        # Behind muster every server hears that the roots changed and may ask: answer them all for a moment.
        argv += ["--roots-changed", "--expect", "roots/list", "--linger", "2"]
    else:
        argv += ["--tool", tool, "--progress"]
        argv += {"log": ["--expect", "notifications/message"], "progress": ["--expect", "notifications/progress"]}.get(
            kind, []
        )
    started = time.monotonic()
    with anyio.fail_after(EXCHANGE_SECONDS + 10):  # the harness bounds itself; this is for a harness that does not
        done = await anyio.run_process(tools.node(tools.TS_CLIENT, *argv), env=_env(), check=False)
    seconds = time.monotonic() - started
    events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]
    roots_changed: list[Any] = []
    if kind == "roots-after-list-changed" and done.returncode == 0:
        with anyio.move_on_after(2):  # the harness saw its answer accepted; the server records it just after
            roots_changed = await await_roots_answer(server, root)
    why = verdict(kind, events, roots_changed or await roots_changed_of(server), root)
    if done.returncode == 2:
        missing: list[Any] = next((e["missing"] for e in events if e["event"] == "timeout"), [])
        return Exchange(events, seconds, f"no outcome within {EXCHANGE_SECONDS:.0f} s (awaiting {missing}): {why}")
    if done.returncode != 0 and why is None:
        why = f"the harness exited with {done.returncode}: {done.stderr.decode()[-300:]}"
    return Exchange(events, seconds, why)


def _env() -> dict[str, str]:
    return {**os.environ, **tools.node_env()}


async def exchange(
    client: str, url: str, prefix: str, kind: str, server: StandIn, case: str, tool: str = ""
) -> Exchange:
    """One exchange of one kind, with one client, against an upstream directly (prefix "") or through muster; the
    tool is the fixture's unrelated_<kind> unless named (there is none for roots-after-list-changed)."""
    tool = tool or f"unrelated_{kind}"
    tool = f"x_{prefix}_{tool}" if prefix else tool
    root = f"file:///canned/{case}"  # each exchange's own, so that concurrent ones are told apart at the server
    run = python_client if client == "python-client" else ts_client
    return await run(url, tool, kind, root, server)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Muster]:
    """Both fixture servers behind one muster, in prefix mode `always` (they offer the same tool names)."""
    for m in make_muster(tmp_path_factory.mktemp("standalone")):
        m.fixture_server(SERVERS["python-fixture"])
        m.ts_fixture_server(SERVERS["ts-fixture"])
        m.discovery(prefix_mode="always")
        m.worker()
        m.ingress()
        m.wait_tools({f"x_{prefix}_unrelated_roots" for prefix in SERVERS.values()})
        yield m


CASES = [(server, client, kind) for server in SERVERS for client in CLIENTS for kind in KINDS]


@pytest.fixture(scope="module")
def through_muster(stack: Muster) -> dict[tuple[str, str, str], Exchange]:
    """Every exchange through muster, six at a time: a hang costs its bound once, not once per test."""
    seen: dict[tuple[str, str, str], Exchange] = {}
    limit = anyio.CapacityLimiter(6)

    async def one(server: str, client: str, kind: str) -> None:
        prefix, case = SERVERS[server], f"muster-{server}-{client}-{kind}"
        started = time.monotonic()
        async with limit:
            try:
                done = await exchange(client, stack.url(), prefix, kind, stack.standins[prefix], case)
            except Exception as exc:  # noqa: BLE001  # one exchange's surprise fails only its own test
                done = Exchange([], time.monotonic() - started, f"{type(exc).__name__}: {exc}")
        seen[server, client, kind] = done

    async def every() -> None:
        async with anyio.create_task_group() as tg:
            for case in CASES:
                tg.start_soon(one, *case)

    started = time.monotonic()
    anyio.run(every)
    print(f"\nthrough muster, {len(CASES)} exchanges in {time.monotonic() - started:.1f} s")
    for (server, client, kind), done in sorted(seen.items()):
        print(f"{server:15} {client:14} {kind:25} {done.seconds:5.1f} s  {done.failure or 'ok'}")
    return seen


def _ids(case: tuple[str, str, str]) -> str:
    return ":".join(case)


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES, ids=_ids)
async def test_unrelated_traffic_works_directly(stack: Muster, case: tuple[str, str, str]) -> None:
    server, client, kind = case
    upstream = stack.standins[SERVERS[server]]
    done = await exchange(client, upstream.url, "", kind, upstream, f"direct-{_ids(case)}".replace(":", "-"))
    assert done.failure is None, done.events


@pytest.mark.anyio
@pytest.mark.parametrize("client", CLIENTS)
async def test_the_same_request_on_the_calls_own_stream_works_through_muster(stack: Muster, client: str) -> None:
    """The control for the exchanges below: the Python fixture's test_roots asks roots/list related to the call."""
    prefix = SERVERS["python-fixture"]
    upstream, case = stack.standins[prefix], f"related-{client}"
    done = await exchange(client, stack.url(), prefix, "roots", upstream, case, tool="test_roots")
    assert done.failure is None, done.events


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_unrelated_traffic_works_through_muster(
    through_muster: dict[tuple[str, str, str], Exchange], case: tuple[str, str, str]
) -> None:
    done = through_muster[case]
    assert done.failure is None, f"{done.failure} after {done.seconds:.1f} s; events: {done.events}"
