"""What `appendfsync everysec` (the setting `muster up` runs Valkey with) risks, measured.

    python -m bench.aof_window [--seconds 10] [--rate 2000] [--kills 3]

1. SIGKILL of the Valkey process: a writer appends numbered entries (XADD, each acknowledged before the next is
   counted), Valkey is SIGKILLed and started again on its append-only file; the acknowledged entries missing
   afterwards are what a process crash loses. Valkey hands each write to the kernel before it answers, so the
   kernel still has it: expected 0.
2. A crash of the machine (power, kernel) loses what the kernel had not written to the disk yet: every write
   since Valkey's last fdatasync of the file. strace timestamps those fdatasync calls under the same load; the
   largest gap between two of them is the window, and the entries written in it are what such a crash loses.

Prints one JSON document. Needs strace for part 2 (skipped without it).
"""

import argparse
import asyncio
import itertools
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from muster.stack import Stack, free_port

STREAM = "aof-window"
FSYNC = re.compile(rb"^(\d+) +(\d+\.\d+) (?:fdatasync|fsync)\(")


async def write(url: str, seconds: float, rate: float) -> tuple[int, list[float]]:
    """Appends numbered entries at `rate` per second; returns the last acknowledged number and when each was."""
    client = Redis.from_url(url)
    acknowledged = 0
    stamps: list[float] = []
    pause = 1 / rate
    stop = time.monotonic() + seconds
    try:
        while time.monotonic() < stop:
            await client.xadd(STREAM, {"n": acknowledged + 1})
            acknowledged += 1
            stamps.append(time.time())
            await asyncio.sleep(pause)
    except (ConnectionError, OSError) as exc:
        print(f"writer stopped: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001  (the kill ends the writer however redis-py reports it)
        print(f"writer stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        await client.aclose(close_connection_pool=True)
    return acknowledged, stamps


async def surviving(url: str) -> int:
    client = Redis.from_url(url)
    try:
        last: Any = await client.xrevrange(STREAM, count=1)
        return int(last[0][1][b"n"]) if last else 0
    finally:
        await client.aclose()


def process_kill(root: Path, seconds: float, rate: float) -> dict[str, int]:
    """Acknowledged entries lost to a SIGKILL of Valkey in the middle of the writes."""
    stack = Stack(root, log=lambda _: None)
    port = free_port()
    try:
        url = stack.valkey(port)

        async def run() -> int:
            writer = asyncio.ensure_future(write(url, seconds, rate))
            await asyncio.sleep(seconds / 2)
            stack.stop_child(stack.children[0], signal.SIGKILL)
            acknowledged, _ = await writer
            return acknowledged

        acknowledged = asyncio.run(run())
        stack.valkey(port)
        kept = asyncio.run(surviving(url))
        return {"acknowledged": acknowledged, "kept": kept, "lost": max(0, acknowledged - kept)}
    finally:
        stack.stop()


def fsync_gaps(root: Path, seconds: float, rate: float) -> dict[str, Any] | None:
    """The gaps between Valkey's fdatasync calls under load, and how many acknowledged writes fell in the largest."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    stack = Stack(root, log=lambda _: None)
    try:
        url = stack.valkey(free_port())
        pid = str(stack.children[0].pid)
        trace = root / "strace.out"
        tracer = subprocess.Popen(
            [strace, "-f", "-ttt", "-e", "trace=fdatasync,fsync", "-o", str(trace), "-p", pid],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # attached
        _, stamps = asyncio.run(write(url, seconds, rate))
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
        syncs = [float(m.group(2)) for line in trace.read_bytes().splitlines() if (m := FSYNC.match(line))]
        syncs = [t for t in syncs if stamps and stamps[0] <= t <= stamps[-1]]
        if len(syncs) < 2:
            return {"fsyncs": len(syncs)}
        gaps = [b - a for a, b in itertools.pairwise(syncs)]
        widest = max(range(len(gaps)), key=gaps.__getitem__)
        start, end = syncs[widest], syncs[widest + 1]
        return {
            "fsyncs": len(syncs),
            "gap_median_s": round(sorted(gaps)[len(gaps) // 2], 3),
            "gap_max_s": round(gaps[widest], 3),
            "writes_in_widest_gap": sum(1 for t in stamps if start < t <= end),
            "write_rate": round(len(stamps) / (stamps[-1] - stamps[0]), 1),
        }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="writes per second the writer aims at")
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        kills = []
        for n in range(args.kills):
            (root / f"kill-{n}").mkdir()
            kills.append(process_kill(root / f"kill-{n}", args.seconds, args.rate))
        (root / "fsync").mkdir()
        gaps = fsync_gaps(root / "fsync", args.seconds, args.rate)
    print(orjson.dumps({"appendfsync": "everysec", "process_kill": kills, "fsync": gaps}).decode())


if __name__ == "__main__":
    main()
