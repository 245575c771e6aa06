"""make bench: muster against a direct connection and a peer gateway, in one run, interleaved.

python -m bench [--quick] [--rounds N] [--out docs/benchmarks] [--no-peer]
python -m bench --only identity|sessions|fairness [--quick] [--rounds N] [--out DIR]   (one scenario: OUT/<name>.json)

Each round runs every workload on every target in turn, so that drift of the machine hits all targets alike;
the report gives the median over rounds.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop

from bench import identity, sessions
from bench import scripts as queue_scripts
from bench.fairness import measure as flood_and_quiet
from bench.harness import TELEMETRY_OFF, UPSTREAMS, Harness, machine
from bench.report import write
from shared import streams
from shared.valkey import connect


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "sequential": 20,
            "warmup": 5,
            "concurrency": [4],
            "seconds": 0.5,
            "burst": (5, 4),
            "processes": 1,
            "fairness": {"flood": 200, "connections": 50, "quiet": 5},
            "scripts": 1000,
            "first": 3,
            "session_callers": 4,
        }
    return {
        "sequential": 2000,
        "warmup": 200,
        "concurrency": [16, 64, 256],
        "seconds": 6.0,
        "burst": (200, 50),
        "processes": 2,
        "fairness": {"flood": 5000, "connections": 1000, "quiet": 20},
        "scripts": 20_000,
        "first": 100,  # calls that each open an agent session (bench/sessions.py)
        "session_callers": 64,
    }


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (or median p50), keeping its numbers together."""
    key = "rate" if runs[0].get("rate") else "p50"
    ordered = sorted(runs, key=lambda r: r[key] or 0)
    chosen = dict(ordered[len(ordered) // 2])
    chosen["rounds"] = [r[key] for r in runs]
    return chosen


def median_by(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    chosen = dict(sorted(runs, key=lambda r: r[key])[len(runs) // 2])
    chosen["rounds"] = [r[key] for r in runs]
    return chosen


# The upstream's answer time in the second fairness run: a Kubernetes API across a network, as mcp-kubernetes
# sees its management cluster's. In the first the stand-in answers as fast as it can, on the cores it shares
# with the flood's generator and with muster, so that run also measures how two cores are shared.
REMOTE_SECONDS = 0.05


def fairness(harness: Harness, settings: dict[str, int], upstream_seconds: float = 0.0) -> dict[str, Any]:
    """One agent's flood against another's sequential calls, through muster with two workers (k8s stand-in);
    with `upstream_seconds`, the stand-in takes that long for each call (its delay fault) meanwhile."""
    target = next(t for t in harness.targets if t.name == "muster 2 workers")
    harness.prepare(target)
    k8s = UPSTREAMS[0]
    url = harness.env["MUSTER_VALKEY_URL"]
    faults = next(t for t in harness.targets if t.name == "direct").urls[k8s.name].removesuffix("/mcp")
    faults += "/_standin/faults"

    async def run() -> dict[str, Any]:
        valkey = connect(url)

        async def depth() -> int:
            return int(await valkey.get(streams.depth(k8s.name)) or 0)

        try:
            return await flood_and_quiet(
                target.urls[k8s.name], target.tools[k8s.name], k8s.arguments, depth=depth, **settings
            )
        finally:
            await valkey.aclose()

    if upstream_seconds:
        delay = {"action": "delay", "tool": k8s.tool, "seconds": upstream_seconds}
        httpx.post(faults, json=delay, timeout=5).raise_for_status()
    try:
        return {**uvloop.run(run()), "upstream_seconds": upstream_seconds}
    finally:
        if upstream_seconds:
            httpx.delete(faults, timeout=5).raise_for_status()


def fairness_alone(harness: Harness, settings: dict[str, Any], rounds: int) -> dict[str, Any]:
    """The two fairness runs, `rounds` times each, every round kept: with MUSTER_INGRESS_FAIR_SHARE set in the
    environment, what another share does (`MUSTER_INGRESS_FAIR_SHARE=2 python -m bench --only fairness`)."""
    share = os.environ.get("MUSTER_INGRESS_FAIR_SHARE", "the default")
    found: dict[str, Any] = {"share": share, "fairness": [], "fairness_remote": []}
    for _ in range(rounds):
        for key, seconds in (("fairness", 0.0), ("fairness_remote", REMOTE_SECONDS)):
            found[key].append(fairness(harness, settings["fairness"], seconds))
            run = found[key][-1]
            harness.stack.log(
                f"  fairness, share {share}, upstream {seconds * 1000:.0f} ms: p99 ratio {run['ratio']}, "
                f"once queued {run.get('steady_ratio')}; flood drained in {run['flood_elapsed']} s"
            )
    return found


# Scenarios `--only` runs alone; the full run runs them after the main workloads.
SCENARIOS = {"identity": identity.run, "sessions": sessions.run, "fairness": fairness_alone}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="a tiny workload: checks the harness, measures nothing")
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--out", default="docs/benchmarks")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--report", metavar="RESULTS_JSON", help="only write the page and plot again from saved results")
    p.add_argument(
        "--only",
        choices=sorted(SCENARIOS),
        help="only this scenario, without the page (results on stdout and in OUT/<scenario>.json)",
    )
    args = p.parse_args()
    if args.report:
        write(orjson.loads(Path(args.report).read_bytes()), Path(args.out))
        return
    settings = plan(args.quick)
    rounds = args.rounds or (1 if args.quick else 3)
    out = Path(args.out)
    stamp = machine()  # the commit that is measured: taken before the run, as the code is loaded
    scripts = None if args.only else uvloop.run(queue_scripts.measure(settings["scripts"]))
    with tempfile.TemporaryDirectory(prefix="muster-bench-") as tmp:
        harness = Harness(Path(tmp), quick=args.quick)
        try:
            harness.start(peer=not args.no_peer and not args.only)
            if args.only:
                found = orjson.dumps(SCENARIOS[args.only](harness, settings, rounds), option=orjson.OPT_INDENT_2)
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{args.only}.json").write_bytes(found)
                print(found.decode())
                return
            results = run(harness, settings, rounds)
            results["identity"] = identity.run(harness, settings, rounds)
        finally:
            harness.stop()
    results["scripts"] = scripts
    results["machine"] = stamp
    results["settings"] = {**settings, "rounds": rounds}
    write(results, out)
    print(f"bench: wrote {out}/results.json, README.md, throughput.png", file=sys.stderr)


def run(harness: Harness, settings: dict[str, Any], rounds: int) -> dict[str, Any]:
    log = harness.stack.log
    sequential: dict[str, dict[str, list[dict[str, Any]]]] = {}
    throughput: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {}
    burst: dict[str, list[dict[str, Any]]] = {}
    fair: list[dict[str, Any]] = []
    fair_remote: list[dict[str, Any]] = []
    for n in range(rounds):
        log(f"round {n + 1} of {rounds}")
        for upstream in UPSTREAMS:
            for target in harness.targets:
                harness.load(target, upstream, callers=1, calls=settings["warmup"])
                result = harness.load(target, upstream, callers=1, calls=settings["sequential"])
                sequential.setdefault(upstream.name, {}).setdefault(target.name, []).append(result)
                log(f"  sequential {upstream.name:10} {target.name:17} p50 {result['p50']} ms p99 {result['p99']} ms")
            for callers in settings["concurrency"]:
                for target in harness.targets:
                    seconds = settings["seconds"] * (2 if target.name == "fastmcp proxy" else 1)
                    result = harness.load(
                        target, upstream, callers=callers, seconds=seconds, processes=settings["processes"]
                    )
                    throughput.setdefault(upstream.name, {}).setdefault(target.name, {}).setdefault(callers, []).append(
                        result
                    )
                    log(
                        f"  c={callers:<4} {upstream.name:10} {target.name:17} {result['rate']:8.1f}/s "
                        f"p50 {result['p50']} p99 {result['p99']} failed {result['failed']}"
                    )
        agents, calls = settings["burst"]
        k8s = UPSTREAMS[0]
        for target in harness.targets:
            if target.name == "fastmcp proxy" and not harness.quick:
                continue  # 10,000 calls at its ~70 calls/s would take minutes per round; its throughput says enough
            if target.name == TELEMETRY_OFF:
                continue  # it differs from "muster 1 worker" only in CPU per call, which throughput measures
            result = harness.load(target, k8s, callers=agents, calls=calls, burst=True, processes=settings["processes"])
            burst.setdefault(target.name, []).append(result)
            log(
                f"  burst {agents}x{calls} {target.name:17} completed {result['calls'] - result['failed']} "
                f"failed {result['failed']} drained in {result['elapsed']:.2f} s"
            )
        for runs, seconds in ((fair, 0.0), (fair_remote, REMOTE_SECONDS)):
            runs.append(fairness(harness, settings["fairness"], seconds))
            log(
                f"  fairness, upstream {seconds * 1000:.0f} ms: quiet p99 {runs[-1]['idle_p99']} ms idle, "
                f"{runs[-1]['during_p99']} ms during a flood of {runs[-1]['flood']} ({runs[-1]['ratio']}x)"
            )
    log("upstream sessions: per agent session, and the shared pool")
    per_agent = sessions.run(harness, settings, rounds)
    return {
        "fairness": median_by(fair, "ratio"),
        "fairness_remote": median_by(fair_remote, "ratio"),
        "sessions": per_agent,
        "sequential": {u: {t: median(r) for t, r in ts.items()} for u, ts in sequential.items()},
        "throughput": {
            u: {t: {c: median(r) for c, r in cs.items()} for t, cs in ts.items()} for u, ts in throughput.items()
        },
        "burst": {t: median(r) for t, r in burst.items()},
    }


if __name__ == "__main__":
    main()
