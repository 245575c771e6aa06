"""CPU per call of the per-call JSON work, before and after payloads became bytes (shared/rawjson.py).

    python -m bench.rawjson

Before: the ingress decoded the request and encoded the params again (orjson.loads + orjson.dumps), and the worker
decoded the upstream's response and encoded its result again. After: both decode once (to check and route) and
cut the bytes they forward out of what they received. Measured with time.process_time, so other load on the
machine costs wall time, not the numbers; each figure is the best of five rounds.

On this 2-core machine under heavy load from other work (load average 18), µs of CPU per call:

    path                                                  before     after
    ingress, tools/call, compact (SDK clients)              1.75      6.55
    ingress, tools/call, spaced                             1.91     35.3
    worker, result of 0 kB, compact                          1.5       3.6
    worker, result of 0 kB, spaced                           1.5       9.5
    worker, result of 28 kB, compact                        44.0      54.7
    worker, result of 28 kB, spaced                         45.9      86.7
    worker, result of 2,760 kB, compact                   9957     10396
    worker, result of 2,760 kB, spaced                   11236     14954

"compact" is how the mcp SDKs write (orjson's own form: the canonical path); "spaced" is json.dumps' default
form (the scanner's path). So a call from an SDK client pays about 5 + 2 µs more across ingress and worker,
against a budget of 1,000 µs, for results and arguments that arrive exactly as sent.
"""

import json  # noqa: TID251  # the spaced JSON other peers write, to measure muster on it
import time
from collections.abc import Callable
from typing import Any

import orjson

from shared.rawjson import Document

ARGUMENTS = {"resourceType": "pods", "namespace": "org-acme", "name": "web-1", "labelSelector": "app=web"}
REQUEST = {
    "jsonrpc": "2.0",
    "id": 17,
    "method": "tools/call",
    "params": {"name": "x_alpha_get", "arguments": ARGUMENTS, "_meta": {"progressToken": 3}},
}
POD = {"metadata": {"name": "web-1", "namespace": "org-acme", "labels": {"app": "web"}}, "status": {"phase": "Running"}}


def _response(items: int) -> dict[str, Any]:
    pods = [POD] * items
    text = json.dumps(pods)
    return {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}], "isError": False}}


def ingress_before(body: bytes) -> bytes:
    message = orjson.loads(body)
    request_id = orjson.dumps(message["id"])
    params = orjson.dumps({**message["params"], "name": "get"})
    return request_id + params


def ingress_after(body: bytes) -> bytes:
    doc = Document.parse(body)
    request_id = doc.member("id")
    params = doc.child("params")
    assert request_id is not None and params is not None
    return request_id + params.rebuilt({"name": b'"get"'})


def worker_before(body: bytes) -> bytes:
    return orjson.dumps(orjson.loads(body)["result"])


def worker_after(body: bytes) -> bytes:
    result = Document.parse(body).member("result")
    assert result is not None
    return result


def cpu_us(work: Callable[[bytes], bytes], body: bytes) -> float:
    """CPU µs per call, best of five rounds of about 0.2 s each."""
    rounds = []
    n = max(1, int(0.2 / _once(work, body)))
    for _ in range(5):
        started = time.process_time()
        for _ in range(n):
            work(body)
        rounds.append((time.process_time() - started) / n)
    return min(rounds) * 1e6


def _once(work: Callable[[bytes], bytes], body: bytes) -> float:
    started = time.process_time()
    work(body)
    return max(time.process_time() - started, 1e-7)


def main() -> None:
    compact = orjson.dumps(REQUEST)
    spaced = json.dumps(REQUEST).encode()  # as json.dumps writes it: spaces after , and :
    print(f"{'path':52} {'before µs':>10} {'after µs':>10}")
    for label, body in (
        ("ingress, tools/call, compact (SDK clients)", compact),
        ("ingress, tools/call, spaced", spaced),
    ):
        print(f"{label:52} {cpu_us(ingress_before, body):10.2f} {cpu_us(ingress_after, body):10.2f}")
    for items in (2, 200, 20_000):
        for label, body in (
            ("compact", orjson.dumps(_response(items))),
            ("spaced", json.dumps(_response(items)).encode()),
        ):
            name = f"worker, result of {len(body) / 1000:,.0f} kB, {label}"
            print(f"{name:52} {cpu_us(worker_before, body):10.1f} {cpu_us(worker_after, body):10.1f}")


if __name__ == "__main__":
    main()
