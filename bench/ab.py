"""make bench-ab: two revisions of muster measured in one run, interleaved, against one shared upstream.

python -m bench.ab --base REV --head REV [--rounds N] [--out DIR] [--name NAME] [--quick]
                   [--base-env NAME=VALUE ...] [--head-env NAME=VALUE ...]

Each revision's tree is exported from git and runs as a stack of its own (Valkey, discovery on a folder of
MCPServers, one worker, ingress) with this interpreter, in front of one k8s stand-in from the current tree, so
that only muster's code differs. Both stacks run for the whole measurement; each workload runs on base and head
in turn, the order swapped every round, so that drift of a shared machine reaches both alike. The report pairs
the rounds: head - base of each round, its median and its range. With --base-env / --head-env, one revision
against itself measures what a setting costs (MUSTER_CALL_METRICS=false, ...): every service of that side gets
the variable.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import ab_report, report, revision
from bench.harness import UPSTREAMS, Target, machine, run_load, start_muster, start_upstream
from muster.stack import Stack

K8S = UPSTREAMS[0]


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {"warmup": 5, "sequential": 20, "callers": 4, "seconds": 0.5}
    return {"warmup": 200, "sequential": 1000, "callers": 16, "seconds": 5.0}


def loadavg() -> str:
    """The load averages over 1, 5 and 15 minutes: how busy the shared machine was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def start(stack: Stack, root: Path, rev: revision.Revision, upstream: str) -> Target:
    """The revision's stack, checked to run its own code with the settings meant."""
    given: dict[str, dict[str, str]] = {}

    def environment(role: str, values: dict[str, str]) -> dict[str, str]:
        given[role] = rev.environment(role, values)
        return given[role]

    started = start_muster(stack, root, {K8S.name: upstream}, rev.label, environment, cwd=rev.tree)
    revision.verify(rev, given, started)
    stack.log(f"{rev.label} ({rev.commit[:7]}) runs from {rev.tree}; its settings read what they were given")
    return Target(rev.label, {K8S.name: started.endpoint}, {K8S.name: f"x_{K8S.name}_{K8S.tool}"}, started.roles)


def measure(
    stack: Stack, root: Path, targets: list[Target], upstream_pid: int, settings: dict[str, Any], rounds: int
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """workload -> revision label -> one run per round."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for n in range(rounds):
        stack.log(f"round {n + 1} of {rounds}")
        order = targets if n % 2 == 0 else targets[::-1]
        for workload in ab_report.WORKLOADS:
            for target in order:
                if workload == "sequential":
                    run_load(root, target, K8S, upstream_pid, callers=1, calls=settings["warmup"])
                    result = run_load(root, target, K8S, upstream_pid, callers=1, calls=settings["sequential"])
                else:
                    callers, seconds = settings["callers"], settings["seconds"]
                    result = run_load(root, target, K8S, upstream_pid, callers=callers, seconds=seconds, warm=True)
                run = ab_report.run(result)
                runs.setdefault(workload, {}).setdefault(target.name, []).append(run)
                stack.log(
                    f"  {workload:10} {target.name}: {run['total']:.3f} ms CPU/call (ingress {run['ingress']:.3f}, "
                    f"worker {run['worker']:.3f}, valkey {run['valkey']:.3f}), p50 {run['p50']} ms, "
                    f"{run['rate']:.0f}/s, failed {run['failed']}"
                )
    return runs


def variables(given: list[str]) -> dict[str, str]:
    """--base-env / --head-env values: NAME=VALUE, each a MUSTER_ variable."""
    found = {}
    for item in given:
        name, equals, value = item.partition("=")
        if not equals or not name.startswith("MUSTER_"):
            raise SystemExit(f"bench.ab: {item!r}: expected MUSTER_NAME=VALUE")
        found[name] = value
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", required=True, help="the revision compared against (git rev)")
    p.add_argument("--head", required=True, help="the revision measured (git rev)")
    p.add_argument("--rounds", type=int, default=0, help="rounds of base and head (default 5; 1 with --quick)")
    p.add_argument("--out", default="docs/benchmarks")
    p.add_argument("--name", default="ab", help="the report's files are OUT/NAME.json and OUT/NAME.md")
    p.add_argument("--quick", action="store_true", help="a tiny workload: checks the tool, measures nothing")
    for side in ("base", "head"):
        p.add_argument(
            f"--{side}-env",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"a MUSTER_ variable every service of the {side} stack gets (repeatable)",
        )
    p.add_argument(
        "--allow-dependency-change",
        action="store_true",
        help="measure revisions whose declared requirements differ (this interpreter runs both)",
    )
    args = p.parse_args()
    # Both stacks get exactly the variables their settings read; one set in this shell would reach both.
    for name in [k for k in os.environ if k.startswith("MUSTER_")]:
        print(f"bench.ab: ignoring {name} from the environment", file=sys.stderr)
        del os.environ[name]
    extra = {side: variables(getattr(args, f"{side}_env")) for side in ("base", "head")}
    settings = plan(args.quick)
    rounds = args.rounds or (1 if args.quick else 5)
    stamp, load_before = machine(), loadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="muster-ab-") as tmp:
        root = Path(tmp)
        try:
            base = revision.export("base", args.base, root)
            head = revision.export("head", args.head, root)
        except revision.RevisionError as exc:
            raise SystemExit(f"bench.ab: {exc}") from None
        base.extra, head.extra = extra["base"], extra["head"]
        dropped, added = revision.dependency_change(base, head)
        if (dropped or added) and not args.allow_dependency_change:
            raise SystemExit(
                f"bench.ab: {base.commit[:7]} and {head.commit[:7]} declare different requirements "
                f"(dropped {sorted(dropped)}, added {sorted(added)}): one interpreter may not run both as they "
                "were meant to run. Use --allow-dependency-change if it does."
            )
        stack = Stack(root, log=lambda m: print(f"bench.ab: {m}", file=sys.stderr, flush=True))
        try:
            url, upstream_pid = start_upstream(stack, K8S)
            targets = [start(stack, root, rev, url) for rev in (base, head)]
            runs = measure(stack, root, targets, upstream_pid, settings, rounds)
        except revision.RevisionError as exc:
            raise SystemExit(f"bench.ab: {exc}") from None
        finally:
            stack.stop()
    results = {
        "kind": "ab",
        "machine": {**stamp, "loadavg_before": load_before, "loadavg_after": loadavg()},
        "minutes": round((time.monotonic() - started) / 60, 1),
        "settings": {**settings, "rounds": rounds, "quick": args.quick},
        "base": base.record(),
        "head": head.record(),
        "requirements": {"dropped": sorted(dropped), "added": sorted(added)},
        **ab_report.summarize(runs),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (out / f"{args.name}.md").write_text(ab_report.markdown(results))
    report.refresh(out)
    print(f"bench.ab: wrote {out}/{args.name}.json and {args.name}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
