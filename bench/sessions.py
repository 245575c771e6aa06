"""What an agent's own upstream session costs: muster (one worker) with per-agent upstream sessions against the
same muster with the shared pool (MUSTER_WORKER_UPSTREAM_SESSIONS=shared), on both upstreams.

- first call: each call is the first of a new agent session (opened just before, outside the timing). With
  per-agent sessions it includes the upstream's initialize, notifications/initialized, the binding written to
  Valkey and the wait for the upstream's GET stream to be established; with the shared pool, none of it.
- steady state: sequential calls in one agent session, and 64 callers (4 with --quick) for a few seconds after
  each made its first call: the same path either way, but for the session header and an in-flight record posted
  with each call (no extra round trip).
"""

import time
from typing import Any

from bench.harness import UPSTREAMS, Harness, Target

MODES = {"agent sessions": "agent", "shared pool": "shared"}
TARGET = "muster 1 worker"


def _restart_worker(harness: Harness, mode: str) -> None:
    """Worker 1 again, with the mode; every muster target counts the new process's CPU."""
    old = next(c for c in harness.stack.children if c.name.startswith("worker 1"))
    assert old.process is not None
    pid = old.process.pid
    harness.stack.stop_child(old)
    env = {**harness.env, "MUSTER_WORKER_ID": "bench-1", "MUSTER_WORKER_UPSTREAM_SESSIONS": mode}
    new = harness.stack.python(f"worker 1 ({mode})", "services.worker", env=env)
    assert new.process is not None
    for target in harness.targets:
        target.roles["worker"] = [new.process.pid if p == pid else p for p in target.roles.get("worker", [])]
    time.sleep(1.5)  # subscribed to every server stream


def _median(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r[key] or 0)
    chosen = dict(ordered[len(ordered) // 2])
    chosen.pop("latencies", None)
    chosen["rounds"] = [r[key] for r in runs]
    return chosen


def run(harness: Harness, settings: dict[str, Any], rounds: int) -> dict[str, Any]:
    log = harness.stack.log
    target: Target = next(t for t in harness.targets if t.name == TARGET)
    found: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    try:
        for n in range(rounds):
            for label, mode in MODES.items():
                _restart_worker(harness, mode)
                for upstream in UPSTREAMS:
                    runs = found.setdefault(upstream.name, {}).setdefault(label, {})
                    first = harness.load(target, upstream, callers=1, calls=settings["first"], fresh=True)
                    harness.load(target, upstream, callers=1, calls=settings["warmup"])
                    sequential = harness.load(target, upstream, callers=1, calls=settings["sequential"])
                    loaded = harness.load(
                        target,
                        upstream,
                        callers=settings["session_callers"],
                        seconds=settings["seconds"],
                        processes=settings["processes"],
                        warm=True,  # every agent's first call before the measurement: the steady state
                    )
                    for name, result in (("first", first), ("sequential", sequential), ("loaded", loaded)):
                        runs.setdefault(name, []).append(result)
                    log(
                        f"  sessions round {n + 1} {upstream.name:10} {label:14} first call p50 {first['p50']} ms, "
                        f"sequential p50 {sequential['p50']} ms, c={settings['session_callers']} {loaded['rate']:.0f}/s"
                    )
    finally:
        _restart_worker(harness, "agent")
    return {
        u: {
            label: {name: _median(results, "rate" if name == "loaded" else "p50") for name, results in by_name.items()}
            for label, by_name in by_label.items()
        }
        for u, by_label in found.items()
    }


def _cpu(result: dict[str, Any]) -> float:
    cpu = result["cpu_ms_per_call"]
    return float((cpu.get("ingress") or 0) + (cpu.get("worker") or 0))


def markdown(results: dict[str, Any], callers: int) -> list[str]:
    if not results:  # results saved before this scenario existed
        return []
    lines = [
        "",
        f"## Upstream sessions: each agent's own, or the shared pool ({TARGET})",
        "",
        'An upstream that names its sessions gets one per agent session (README, "Upstream sessions"); '
        "`shared pool` is the same muster with `MUSTER_WORKER_UPSTREAM_SESSIONS=shared`. `first call`: each call "
        "the first of a new agent session. CPU: ingress + worker, ms per call.",
        "",
        "| upstream | sessions | first call p50 ms | first call p99 ms | first call CPU | sequential p50 ms "
        f"| sequential CPU | c={callers} calls/s | c={callers} p50 ms | c={callers} CPU | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    for upstream, by_label in results.items():
        for label, r in by_label.items():
            first, sequential, loaded = r["first"], r["sequential"], r["loaded"]
            failed = first["failed"] + sequential["failed"] + loaded["failed"]
            cells = [
                upstream,
                label,
                ms(first["p50"]),
                ms(first["p99"]),
                ms(_cpu(first)),
                ms(sequential["p50"]),
                ms(_cpu(sequential)),
                f"{loaded['rate']:.0f}",
                ms(loaded["p50"]),
                ms(_cpu(loaded)),
                str(failed),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines
