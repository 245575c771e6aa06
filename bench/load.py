"""One load-generator process: C callers, each with its own MCP session and keep-alive connection, calling one
tool as fast as it is answered, for a duration or a number of calls. Writes one JSON object: to the --report
file, or to standard output.

It speaks raw HTTP through muster's lean client (about 0.05 ms of CPU per call), not through the MCP SDK,
whose client alone saturates a core at about 200 calls/s and would measure itself.

python -m bench.load --url URL --tool NAME [--args JSON] --callers C (--seconds S | --calls N) [--burst] [--fresh]
    [--wait] [--report FILE]

--fresh: each call is the first of a new agent session (opened, outside the timing, just before it).
--warm: each caller makes one call before the measurement, so that what a first call sets up (an agent's own
upstream session) is not in it.
"""

import argparse
import asyncio
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from shared.http1 import HttpError, Pool

HEADERS = [(b"Accept", b"application/json, text/event-stream"), (b"Content-Type", b"application/json")]
INIT = orjson.dumps(
    {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "muster-bench", "version": "1"},
        },
    }
)
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


class Caller:
    """One connection; callers made with `twin` share a session, as the concurrent calls of one agent do."""

    def __init__(self, url: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.url = url
        self.pool = Pool(url, max_idle=1, keepalive_expiry=3600)
        self.headers = headers if headers is not None else list(HEADERS)
        bearer = os.environ.get("BENCH_BEARER")  # muster with auth on: a token minted for the load (bench/identity.py)
        if bearer and headers is None:
            self.headers.append((b"Authorization", b"Bearer " + bearer.encode()))
        self.ids = itertools.count(1)

    def twin(self) -> "Caller":
        twin = Caller(self.url, self.headers)
        twin.ids = self.ids
        return twin

    async def open(self) -> None:
        response = await self.pool.request(b"POST", self.headers, INIT)
        if response.status != 200:
            raise RuntimeError(f"initialize answered HTTP {response.status}: {response.body[:200]!r}")
        session = response.headers.get(b"mcp-session-id")
        if session:
            self.headers.append((b"Mcp-Session-Id", session))
        self.headers.append((b"MCP-Protocol-Version", b"2025-11-25"))
        await self.pool.request(b"POST", self.headers, INITIALIZED)

    async def call(self, tool: bytes, arguments: bytes) -> str | None:
        """One tools/call; None when it succeeded, else what went wrong."""
        request_id = next(self.ids)
        body = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":%s}}' % (
            request_id,
            tool,
            arguments,
        )
        found: list[Any] = []

        def on_event(data: bytes) -> bool:
            message = orjson.loads(data)
            if message.get("id") == request_id:
                found.append(message)
                return True
            return False

        response = await self.pool.request(b"POST", self.headers, body, on_event=on_event)
        if response.status != 200:
            return f"HTTP {response.status}"
        message = found[0] if found else orjson.loads(response.body)
        if message.get("id") != request_id:
            return "reply with another id"
        if "error" in message:
            return f"error {message['error'].get('code')}"
        if message["result"].get("isError"):
            return "isError"
        return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tool, arguments = args.tool.encode(), orjson.dumps(orjson.loads(args.args))
    agents = [Caller(args.url) for _ in range(args.callers)]
    for batch in range(0, len(agents), 64):  # sessions first, outside the measurement
        await asyncio.gather(*(c.open() for c in agents[batch : batch + 64]))
        if args.warm:
            await asyncio.gather(*(c.call(tool, arguments) for c in agents[batch : batch + 64]))
    # in a burst every agent sends all its calls at once, each on a connection of its own
    callers = [c.twin() for c in agents for _ in range(args.calls)] if args.burst else agents
    per_caller = 1 if args.burst else args.calls
    latencies: list[float] = []
    failures: dict[str, int] = {}
    if args.wait:  # say so, and start when told: the orchestrator releases all its load processes together
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started, cpu = time.perf_counter(), time.process_time()
    stop_at = started + args.seconds if args.seconds else None

    async def loop(caller: Caller) -> None:
        done = 0
        while (stop_at is None and done < per_caller) or (stop_at is not None and time.perf_counter() < stop_at):
            if args.fresh and done:
                caller.pool.close()
                caller = Caller(args.url)
                await caller.open()
            t0 = time.perf_counter()
            try:
                problem = await caller.call(tool, arguments)
            except (HttpError, OSError, ValueError) as exc:
                problem = type(exc).__name__
            latencies.append(time.perf_counter() - t0)
            if problem is not None:
                failures[problem] = failures.get(problem, 0) + 1
            done += 1

    await asyncio.gather(*(loop(c) for c in callers))
    elapsed = time.perf_counter() - started
    for caller in {id(c.pool): c for c in agents + callers}.values():
        caller.pool.close()
    return {
        "calls": len(latencies),
        "failed": sum(failures.values()),
        "failures": failures,
        "elapsed": elapsed,
        "cpu": time.process_time() - cpu,
        "latencies": [round(x * 1000, 3) for x in latencies],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--tool", required=True)
    p.add_argument("--args", default="{}")
    p.add_argument("--callers", type=int, default=1)
    p.add_argument("--calls", type=int, default=0, help="calls per caller")
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--burst", action="store_true", help="each caller sends its calls at once")
    p.add_argument("--fresh", action="store_true", help="each call in a new session: the first call of an agent")
    p.add_argument("--warm", action="store_true", help="one call per caller before the measurement")
    p.add_argument(
        "--wait", action="store_true", help='print "ready" once the sessions are open; start on a stdin line'
    )
    p.add_argument("--report", type=Path, help="write the report to this file (a report can be far larger than a pipe)")
    args = p.parse_args()
    report = orjson.dumps(uvloop.run(run(args)))
    if args.report is not None:
        args.report.write_bytes(report)
    else:
        sys.stdout.buffer.write(report)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
