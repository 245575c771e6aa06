"""Real parts for the worker's pieces: the session's valkey-server, a stand-in of mcp-kubernetes (faults and
counters over HTTP) and the conformance fixture server (which asks its client things mid-call), each a process
on 127.0.0.1; and a Dispatcher wired as the worker wires it."""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis

from muster.stack import Stack, free_port
from services.worker.dispatch import Dispatcher
from services.worker.upstream import Upstream
from shared import streams
from shared.messages import Call, CallReply, ReplyKind, ServerRecord, read_reply
from shared.valkey import ENQUEUE, Outbox, ensure_group
from tests.conftest import ROOT, StandIn, entries

WORKER = "worker-under-test"
OTHER_WORKER = "other-worker"
REPLICA = b"replica-under-test"
NS = {"resourceType": "namespaces", "name": "default"}


def _start(stack: Stack, name: str, module: str, *args: str) -> StandIn:
    port = free_port()
    stack.python(name, module, "--port", str(port), *args, env={"PYTHONPATH": str(ROOT)})
    stack.wait_tcp(port, name)
    return StandIn(name, port)


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StandIn]]:
    stack = Stack(tmp_path_factory.mktemp("upstreams"))
    try:
        yield {
            "k8s": _start(stack, "k8s", "demo.kubernetes", "--cluster", "k8s", "--destructive"),
            "fixture": _start(stack, "fixture", "tests.fixtures.conformance_server"),
        }
    finally:
        stack.stop()


@pytest.fixture
def k8s(upstreams: dict[str, StandIn]) -> Iterator[StandIn]:
    standin = upstreams["k8s"]
    yield standin
    standin.clear_faults()


@dataclass
class Bench:
    """A Dispatcher as the worker has it, and the Valkey around it: enqueue calls, take them, read the replies."""

    valkey: Redis
    outbox: Outbox
    dispatcher: Dispatcher
    upstreams: list[Upstream] = field(default_factory=list)

    def upstream(self, server: StandIn, concurrency: int = 8, **fields: Any) -> Upstream:
        record = ServerRecord(name=server.name, url=server.url, state="Connected", **fields)
        upstream = Upstream.of(record, concurrency)
        self.upstreams.append(upstream)
        return upstream

    async def agent(
        self,
        session: str,
        principal: str = "anonymous",
        *,
        ttl: int = 60,
        stream: bytes | None = None,
        **fields: str,
    ) -> bytes:
        """An agent's MCP session as the ingress records it; `stream`: the replica holding its GET stream."""
        record: dict[Any, Any] = {"protocol": "2025-11-25", "capabilities": "{}", "principal": principal, **fields}
        if stream is not None:
            record["stream"] = stream
        await self.valkey.hset(streams.session(session), mapping=record)
        await self.valkey.expire(streams.session(session), ttl)
        return session.encode()

    def call(self, server: str, tool: str, arguments: dict[str, Any], **fields: Any) -> Call:
        params = {"name": tool, "arguments": arguments}
        call_id = fields.pop("call_id", b"%d" % time.monotonic_ns())
        return Call(
            **{
                "call_id": call_id,
                "replica": REPLICA,
                "session": b"session-1",
                "principal": b"anonymous",
                "server": server.encode(),
                "method": b"tools/call",
                "params": orjson.dumps(params),
                "deadline_ms": int((time.time() + 30) * 1000),
                "safe": True,
                "key": b"session-1 " + call_id,
                **fields,
            }
        )

    async def enqueue(self, *calls: Call) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Enqueues the calls as the ingress does, and reads them as the worker's group does."""
        queue = streams.queue(calls[0].server.decode())
        await ensure_group(self.valkey, queue.server)
        for call in calls:
            await self.outbox.script(ENQUEUE, (queue.stream, queue.depth), (100, streams.CALLS_MAXLEN, *call.fields()))
        read: Any = await self.valkey.xreadgroup(streams.GROUP_WORKERS, WORKER, {queue.stream: ">"})
        return [(entry_id, fields) for entry_id, fields in read[0][1]]

    async def replies(self, count: int, seconds: float = 10) -> list[CallReply]:
        """The first `count` replies on the replica's stream, waiting for them within a bound."""
        with anyio.fail_after(seconds):
            while True:
                found = await entries(self.valkey, streams.replies(REPLICA.decode()))
                replies = [read_reply(fields) for _, fields in found]
                if len(replies) >= count:
                    return [r for r in replies if isinstance(r, CallReply)]
                await anyio.sleep(0.02)

    async def outcome(self, seconds: float = 10) -> CallReply:
        with anyio.fail_after(seconds):
            while True:
                finals = [r for r in await self.replies(0) if r.final]
                if finals:
                    return finals[-1]
                await anyio.sleep(0.02)

    async def settled(self, server: str) -> tuple[int, int]:
        """(queue depth, entries pending in the group) once the outbox has written everything."""
        await self.outbox.drain()
        queue = streams.queue(server)
        pending: Any = await self.valkey.xpending(queue.stream, streams.GROUP_WORKERS)
        return int(await self.valkey.get(queue.depth) or 0), pending["pending"]


@asynccontextmanager
async def _bench(valkey: Redis, valkey_url: str, worker: str) -> AsyncIterator[Bench]:
    outbox = Outbox(valkey_url, name=f"muster-test-{worker}-out")
    dispatcher = Dispatcher(outbox, worker)
    bench = Bench(valkey, outbox, dispatcher)
    try:
        yield bench
    finally:
        await dispatcher.drain(5)
        for upstream in bench.upstreams:
            await upstream.close()
        outbox.close()


@pytest.fixture
async def bench(valkey: Redis, valkey_url: str) -> AsyncIterator[Bench]:
    async with _bench(valkey, valkey_url, WORKER) as bench:
        yield bench


@pytest.fixture
async def other(valkey: Redis, valkey_url: str) -> AsyncIterator[Bench]:
    """A second worker on the same Valkey."""
    async with _bench(valkey, valkey_url, OTHER_WORKER) as bench:
        yield bench


def error_code(reply: CallReply) -> int:
    assert reply.kind is ReplyKind.ERROR, reply
    code: int = orjson.loads(reply.body)["code"]
    return code


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[StandIn, list[dict[str, Any]]]]:
    """An upstream that accepts every POST (202) and keeps the messages."""
    received: list[dict[str, Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                received.append(orjson.loads(await reader.readexactly(length)))
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield StandIn("raw", server.sockets[0].getsockname()[1]), received
