"""Fairness under a flood: one agent session sends `flood` calls at once to a server, while another agent makes
`quiet` sequential calls to the same server; the quiet agent's p99 during the flood against its idle p99.

python -m bench.fairness --url URL --tool NAME [--args JSON] [--flood 5000] [--connections 1000] [--quiet 20]

The flood comes from another process (bench.load in burst mode: one session, its calls spread over
`connections` connections), so that its load generator does not share the quiet caller's event loop. Without
fairness the quiet agent's calls wait behind everything the flood has queued; with it, behind at most the
flood's fair share.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.load import Caller

Depth = Callable[[], Awaitable[int]]


async def _sequential(caller: Caller, tool: bytes, arguments: bytes, calls: int) -> list[float]:
    """Seconds each of `calls` sequential calls took; raises if one failed."""
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        problem = await caller.call(tool, arguments)
        took.append(time.perf_counter() - started)
        if problem is not None:
            raise RuntimeError(f"a quiet call failed: {problem}")
    return took


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


async def measure(
    url: str,
    tool: str,
    arguments: Any,
    *,
    flood: int = 5000,
    connections: int = 1000,
    quiet: int = 20,
    depth: Depth | None = None,
) -> dict[str, Any]:
    """Idle and flooded latency of the quiet agent, and when it was done against when the flood was."""
    tool_b, arguments_b = tool.encode(), orjson.dumps(arguments)
    caller = Caller(url)
    await caller.open()
    await _sequential(caller, tool_b, arguments_b, 5)  # warm up
    idle = await _sequential(caller, tool_b, arguments_b, quiet)
    with tempfile.TemporaryDirectory(prefix="muster-fairness-") as tmp:
        report = Path(tmp) / "flood.json"
        argv = ["-m", "bench.load", "--url", url, "--tool", tool, "--args", arguments_b.decode()]
        argv += ["--callers", "1", "--calls", str(flood), "--burst", "--connections", str(connections)]
        argv += ["--wait", "--report", str(report)]
        process = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdin is not None and process.stdout is not None
        if await process.stdout.readline() != b"ready\n":
            raise RuntimeError("the flood did not start")
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        released = time.perf_counter()
        await _until_queued(depth, flood)
        queued_after = time.perf_counter() - released
        during = await _sequential(caller, tool_b, arguments_b, quiet)
        quiet_done = time.perf_counter() - released
        steady: list[float] = []
        if depth is not None and await _until_draining(depth):
            steady = await _sequential(caller, tool_b, arguments_b, quiet)
        steady_done = time.perf_counter() - released
        await process.wait()
        flooded = orjson.loads(report.read_bytes())
    caller.pool.close()
    return {
        "flood": flood,
        "quiet": quiet,
        **_summary("idle", idle),
        **_summary("during", during, idle, "ratio"),
        # The same calls once the whole flood is queued and draining: fairness of the queue alone, without the
        # intake of the flood's first thousand requests at once that the calls above compete with at the ingress.
        **(
            {**_summary("steady", steady, idle, "steady_ratio"), "steady_done_after": round(steady_done, 3)}
            if steady
            else {}
        ),
        "quiet_started_after": round(queued_after, 3),  # s after the flood was released
        "quiet_done_after": round(quiet_done, 3),
        "flood_elapsed": round(flooded["elapsed"], 3),
        "flood_failed": flooded["failed"],
        "flood_failures": flooded["failures"],
    }


def _summary(name: str, took: list[float], idle: list[float] | None = None, ratio: str = "") -> dict[str, float]:
    """p50 and p99 (ms) of a run of quiet calls and, named `ratio`, its p99 over the idle run's."""
    found = {f"{name}_p50": round(statistics.median(took) * 1000, 3), f"{name}_p99": round(p99(took) * 1000, 3)}
    if idle is not None:
        found[ratio] = round(p99(took) / p99(idle), 2)
    return found


async def _until_draining(depth: Depth) -> bool:
    """Until the queue's depth has passed its peak (the flood is all in, and going down); False if it ended first."""
    peak = 0
    for _ in range(600):  # 30 s at most
        now = await depth()
        if now == 0:
            return False
        peak = max(peak, now)
        if now < peak * 0.95:
            return True
        await asyncio.sleep(0.05)
    return False


async def _until_queued(depth: Depth | None, flood: int) -> None:
    """Until the flood fills the queue (or a second, when its depth cannot be read)."""
    if depth is None:
        await asyncio.sleep(1.0)
        return
    for _ in range(600):  # 30 s at most
        if await depth() >= flood // 10:
            return
        await asyncio.sleep(0.05)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--tool", required=True)
    p.add_argument("--args", default="{}")
    p.add_argument("--flood", type=int, default=5000)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--quiet", type=int, default=20)
    args = p.parse_args()
    arguments = orjson.loads(args.args)
    result = uvloop.run(
        measure(args.url, args.tool, arguments, flood=args.flood, connections=args.connections, quiet=args.quiet)
    )
    sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()
