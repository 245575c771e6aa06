"""bench.ab's numbers: each run reduced to CPU per call of each role, the rounds paired into head - base
differences, and the page that shows them."""

from statistics import median
from typing import Any

WORKLOADS = ("sequential", "concurrent")
ROLES = ("ingress", "worker", "valkey")
# Rows of the tables: CPU ms per call of muster's roles and their total, then latency and rate; the shared
# upstream's CPU is a control (it does the same work for both revisions).
METRICS = {
    "ingress": "ingress CPU ms/call",
    "worker": "worker CPU ms/call",
    "valkey": "valkey CPU ms/call",
    "total": "**total CPU ms/call**",
    "p50": "p50 ms",
    "rate": "calls/s",
    "upstream": "upstream CPU ms/call (control)",
}


def run(result: dict[str, Any]) -> dict[str, Any]:
    """One load's numbers as the report keeps them (no latencies list)."""
    cpu = result["cpu_ms_per_call"]
    if not result["calls"]:
        raise RuntimeError("a load completed no call")
    return {
        **{role: cpu[role] for role in ROLES},
        "total": round(sum(cpu[role] for role in ROLES), 3),
        "upstream": cpu["upstream"],
        "load": cpu["load"],
        "p50": result["p50"],
        "p99": result["p99"],
        "rate": result["rate"],
        "calls": result["calls"],
        "failed": result["failed"],
    }


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per workload: each revision's median and rounds of every metric, and head - base paired by round."""
    workloads: dict[str, Any] = {}
    for workload, by_revision in runs.items():
        base, head = by_revision["base"], by_revision["head"]
        entry: dict[str, Any] = {"failed": {label: sum(r["failed"] for r in rs) for label, rs in by_revision.items()}}
        for label, rs in by_revision.items():
            entry[label] = {
                "median": {m: round(median(r[m] for r in rs), 3) for m in METRICS},
                "rounds": {m: [r[m] for r in rs] for m in METRICS},
            }
        entry["difference"] = {}
        for m in METRICS:
            paired = [round(h[m] - b[m], 3) for b, h in zip(base, head, strict=True)]
            middle = entry["head"]["median"][m] - entry["base"]["median"][m]
            entry["difference"][m] = {
                "medians": round(middle, 3),  # head's median - base's median
                "median": round(median(paired), 3),  # the median of the rounds' differences
                "min": min(paired),
                "max": max(paired),
                "rounds": paired,
                "percent": round(100 * middle / entry["base"]["median"][m], 1) if entry["base"]["median"][m] else None,
            }
        workloads[workload] = entry
    return {"workloads": workloads}


def _n(value: float, metric: str) -> str:
    return f"{value:.0f}" if metric == "rate" else f"{value:.3f}"


def _signed(value: float, metric: str) -> str:
    return f"{value:+.0f}" if metric == "rate" else f"{value:+.3f}"


def table(entry: dict[str, Any]) -> list[str]:
    lines = [
        "| | base | head | head − base | per round: median (min … max) | base rounds | head rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, label in METRICS.items():
        d = entry["difference"][m]
        percent = f" ({d['percent']:+.1f}%)" if d["percent"] is not None else ""
        cells = [
            label,
            _n(entry["base"]["median"][m], m),
            _n(entry["head"]["median"][m], m),
            _signed(d["medians"], m) + percent,
            f"{_signed(d['median'], m)} ({_signed(d['min'], m)} … {_signed(d['max'], m)})",
            " ".join(_n(v, m) for v in entry["base"]["rounds"][m]),
            " ".join(_n(v, m) for v in entry["head"]["rounds"][m]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict(entry: dict[str, Any], rounds: int) -> str:
    """What the total CPU per call of one workload shows, by rule: the sign of every round's difference."""
    d = entry["difference"]["total"]
    base = entry["base"]["rounds"]["total"]
    said = (
        f"total CPU per call {entry['base']['median']['total']:.3f} ms (base) and "
        f"{entry['head']['median']['total']:.3f} ms (head), head − base {d['medians']:+.3f} ms ({d['percent']:+.1f}%)"
    )
    if rounds < 2:
        return said + "; one round has no spread to judge it by"
    said += f", per round {d['min']:+.3f} … {d['max']:+.3f} ms (base alone varied by {max(base) - min(base):.3f} ms)"
    if d["min"] > 0:
        return said + f": head cost more in every one of {rounds} rounds"
    if d["max"] < 0:
        return said + f": head cost less in every one of {rounds} rounds"
    return said + ": the rounds disagree in sign, so the difference is within this run's noise"


def largest(entry: dict[str, Any]) -> str:
    role = max(ROLES, key=lambda r: abs(entry["difference"][r]["median"]))
    return f"the largest change by role is the {role}'s ({entry['difference'][role]['median']:+.3f} ms per round)"


def _env(side: dict[str, Any]) -> str:
    """What a side was given beyond its revision's settings (--base-env, --head-env)."""
    env = side.get("env") or {}
    return " with " + ", ".join(f"`{k}={v}`" for k, v in env.items()) if env else ""


def _env_args(base: dict[str, Any], head: dict[str, Any]) -> str:
    return "".join(
        f" --{label}-env {k}={v}"
        for label, side in (("base", base), ("head", head))
        for k, v in (side.get("env") or {}).items()
    )


def markdown(results: dict[str, Any]) -> str:
    m, s, base, head = results["machine"], results["settings"], results["base"], results["head"]
    rounds = s["rounds"]
    plural = "s" if rounds != 1 else ""
    titles = {
        "sequential": f"Sequential: one caller, {s['sequential']} calls after {s['warmup']} warm-up calls",
        "concurrent": f"{s['callers']} callers for {s['seconds']:g} s",
    }
    lines = [
        f"# A/B: `{base['commit'][:7]}` against `{head['commit'][:7]}`",
        "",
        f"{m['date']}; {m['cores']} cores ({m['cpu']}), Python {m['python']}, kernel {m['kernel']}; load average "
        f"{m['loadavg_before']} before the run, {m['loadavg_after']} after it. {rounds} round{plural} "
        f"in {results['minutes']} min, base and head in turn (the order swapped every round). Made by "
        f"`python -m bench.ab --base {base['rev']} --head {head['rev']}{_env_args(base, head)}` from `{m['commit']}`"
        + (" (`--quick`: it measures nothing)" if s["quick"] else "")
        + "; the raw numbers are in the JSON file of the same name.",
        "",
        f"- base `{base['commit'][:7]}` (`{base['rev']}`){_env(base)}: {base['subject']}",
        f"- head `{head['commit'][:7]}` (`{head['rev']}`){_env(head)}: {head['subject']}",
        "",
        "Each revision ran from its own exported tree with the same interpreter, as a stack of its own (Valkey, "
        "discovery, one worker, ingress), both in front of one k8s stand-in (tool `get`) from the current tree. "
        "CPU per call is read from /proc for each process; total is ingress + worker + valkey. A round pairs a "
        "base run with the head run next to it.",
        "",
        *names(base, head),
    ]
    if results["requirements"]["dropped"] or results["requirements"]["added"]:
        lines += [
            "",
            f"Declared requirements differ: dropped {results['requirements']['dropped']}, added "
            f"{results['requirements']['added']} (measured with `--allow-dependency-change`).",
        ]
    for workload, entry in results["workloads"].items():
        lines += ["", f"## {titles[workload]}", "", *table(entry)]
        if any(entry["failed"].values()):
            lines += ["", f"Failed calls: {entry['failed']}."]
    lines += ["", "## What the numbers show", ""]
    said = [f"{titles[w].split(':')[0]}: {verdict(e, rounds)}; {largest(e)}." for w, e in results["workloads"].items()]
    lines += [" ".join(said), ""]
    return "\n".join(lines)


def names(base: dict[str, Any], head: dict[str, Any]) -> list[str]:
    """The variables that differ between the revisions: each got the ones its own settings read."""
    rows = []
    for role, given in head["names"].items():
        for key in sorted(set(given) | set(base["names"][role])):
            before, after = base["names"][role].get(key), given.get(key)
            if before != after:
                rows.append(f"| {role} | {key} | {before or '(not read)'} | {after or '(not read)'} |")
    if not rows:
        return ["Both revisions read the same environment variables."]
    return [
        "Variables whose names differ (each revision was given what its settings classes read):",
        "",
        "| service | value | base reads | head reads |",
        "|---|---|---|---|",
        *rows,
    ]
