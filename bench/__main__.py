"""make bench: muster against a direct connection and a peer gateway, in one run, interleaved.

python -m bench [--quick] [--rounds N] [--out docs/benchmarks] [--no-peer]

Each round runs every workload on every target in turn, so that drift of the machine hits all targets alike;
the report gives the median over rounds.
"""

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench import identity, sessions
from bench.harness import TELEMETRY_OFF, UPSTREAMS, Harness, machine
from bench.report import write


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "sequential": 20,
            "warmup": 5,
            "concurrency": [4],
            "seconds": 0.5,
            "burst": (5, 4),
            "processes": 1,
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


# Scenarios `--only` runs alone; the full run runs them after the main workloads.
SCENARIOS = {"identity": identity.run, "sessions": sessions.run}


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
    results["machine"] = stamp
    results["settings"] = {**settings, "rounds": rounds}
    write(results, out)
    print(f"bench: wrote {out}/results.json, README.md, throughput.png", file=sys.stderr)


def run(harness: Harness, settings: dict[str, Any], rounds: int) -> dict[str, Any]:
    log = harness.stack.log
    sequential: dict[str, dict[str, list[dict[str, Any]]]] = {}
    throughput: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {}
    burst: dict[str, list[dict[str, Any]]] = {}
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
    log("upstream sessions: per agent session, and the shared pool")
    per_agent = sessions.run(harness, settings, rounds)
    return {
        "sessions": per_agent,
        "sequential": {u: {t: median(r) for t, r in ts.items()} for u, ts in sequential.items()},
        "throughput": {
            u: {t: {c: median(r) for c, r in cs.items()} for t, cs in ts.items()} for u, ts in throughput.items()
        },
        "burst": {t: median(r) for t, r in burst.items()},
    }


if __name__ == "__main__":
    main()
