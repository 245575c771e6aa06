"""What the queue's scripts cost per call: ENQUEUE and FINISH (shared/queue.py) against the commands they
replaced (an ENQUEUE of INCR + XADD, then XACK, DECR and DEL sent as they come), on a valkey-server of their
own, 64 calls at a time through one Outbox as the ingress and the worker send them.

python -m bench.scripts [--calls 20000]

Reports microseconds per call: Valkey's CPU (from /proc) and this process's, for the way in (the ENQUEUE) and
the way out (a worker's XREADGROUP of up to 64, then their FINISH), also for a principal beyond its fair share
(its calls go to its overflow and are promoted one by one as its calls finish).
"""

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.harness import cpu_seconds
from muster.stack import Stack, free_port
from shared import queue, streams
from shared.messages import ANONYMOUS, Call
from shared.valkey import Outbox, connect, ensure_group

CONCURRENCY = 64
SERVER = "bench"

# The ENQUEUE before fairness (kept here as the baseline it was).
BEFORE = b"""
local depth = redis.call('INCR', KEYS[2])
if depth > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[2])
  return false
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
"""


def _call(n: int, session: bytes) -> Call:
    return Call(
        call_id=b"%d" % n,
        replica=b"bench-replica",
        session=session,
        principal=ANONYMOUS,
        server=SERVER.encode(),
        method=b"tools/call",
        params=b'{"name":"get","arguments":{"resourceType":"namespaces","name":"default"}}',
        deadline_ms=int((time.time() + 120) * 1000),
        safe=True,
        key=session + b" %d" % n,
    )


async def _timed(pid: int, count: int, work: Callable[[], Awaitable[None]]) -> dict[str, float]:
    """Microseconds per call of Valkey's CPU, this process's, and the wall clock, while `work` runs."""
    valkey, own, started = cpu_seconds(pid), time.process_time(), time.perf_counter()
    await work()
    return {
        "valkey_us": round((cpu_seconds(pid) - valkey) / count * 1e6, 2),
        "client_us": round((time.process_time() - own) / count * 1e6, 2),
        "wall_us": round((time.perf_counter() - started) / count * 1e6, 2),
    }


async def _variant(url: str, pid: int, calls: int, name: str) -> dict[str, Any]:
    client = connect(url)
    outbox = Outbox(url)
    keys = streams.queue(SERVER)
    flood = name == "after, one principal beyond its share"
    made = [_call(n, b"flood" if flood else b"s%d" % n) for n in range(calls)]

    async def enqueue(call: Call) -> None:
        if name == "before":
            args = (calls + 1, streams.CALLS_MAXLEN, *call.fields())
            await outbox.script(BEFORE, (keys.stream, keys.depth), args)
        else:
            share = CONCURRENCY if flood else calls + 1
            await queue.enqueue(outbox, call, bound=calls + 1, fair_share=share, until=lambda: 2**62)

    async def finish(entry_id: bytes, call: Call) -> None:
        if name == "before":
            outbox.post(b"XACK", keys.stream, streams.GROUP_WORKERS, entry_id)
            outbox.post(b"DECR", keys.depth)
            await outbox.send(b"DEL", keys.started(entry_id))
        else:
            await queue.finish(outbox, keys, entry_id, call)

    async def way_in() -> None:
        for first in range(0, calls, CONCURRENCY):
            await asyncio.gather(*(enqueue(c) for c in made[first : first + CONCURRENCY]))

    async def way_out() -> None:
        done = 0
        while done < calls:  # as a worker: read what is there (a flooded principal's calls as they are promoted)
            read: Any = await client.xreadgroup(
                streams.GROUP_WORKERS, "w", {keys.stream: ">"}, count=CONCURRENCY, block=1000
            )
            batch = [(entry_id, Call.from_fields(fields)) for entry_id, fields in read[0][1]]
            await asyncio.gather(*(finish(entry_id, call) for entry_id, call in batch))
            done += len(batch)

    try:
        await client.flushall()
        await ensure_group(client, SERVER)
        result = {
            "name": name,
            "enqueue": await _timed(pid, calls, way_in),
            "finish": await _timed(pid, calls, way_out),
        }
        assert int(await client.get(keys.depth) or 0) == 0
        return result
    finally:
        outbox.close()
        await client.aclose()


async def measure(calls: int = 20_000) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="muster-scripts-") as tmp:
        stack = Stack(Path(tmp), log=lambda _: None)
        try:
            url = stack.valkey(free_port())
            pid = stack.children[-1].process.pid  # type: ignore[union-attr]
            names = ("before", "after", "after, one principal beyond its share")
            return [await _variant(url, pid, calls, name) for name in names]
        finally:
            stack.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=20_000)
    args = p.parse_args()
    sys.stdout.buffer.write(orjson.dumps(uvloop.run(measure(args.calls)), option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()
