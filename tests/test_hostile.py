"""Hypothesis drives a real ingress (with a real worker, Valkey and upstream) over real HTTP with malformed and
adversarial JSON-RPC, for both protocol generations: deep nesting, huge strings and numbers, invalid UTF-8,
batches, wrong types in every field, odd headers, duplicate and missing session ids, other HTTP methods.
Every answer is an HTTP answer below 500 (JSON-RPC where the request was one); afterwards the ingress is
alive, its memory and Valkey's grew within bounds, and a normal call still succeeds in both generations."""

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Muster, initialize, make_muster, mcp_client

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("MUSTER_HOSTILE_EXAMPLES", "500"))  # MUSTER_HOSTILE_RANDOM=1: new ones each run
MAX_BODY = 64 * 1024
TOOLS = ["x_raw_echo", "x_raw_odd", "x_raw_fail", "x_nope", "", "x_raw_echo\u0000", "X_RAW_ECHO", "\udfff"]
METHODS = [
    "tools/call", "tools/list", "resources/read", "resources/list", "resources/templates/list", "prompts/get",
    "prompts/list", "completion/complete", "logging/setLevel", "resources/subscribe", "resources/unsubscribe",
    "ping", "initialize", "server/discover", "notifications/initialized", "notifications/cancelled",
    "notifications/progress", "tools/frobnicate", "", "\u202e", "a" * 300, "\ud800",
]  # fmt: skip
ENVELOPE = "io.modelcontextprotocol/"


def nested(depth: int, leaf: Any = 0) -> str:
    return "[" * depth + json.dumps(leaf) + "]" * depth


# Leaves a JSON decoder may trip on: numbers beyond every range, long strings, escapes that are not characters.
odd_numbers = st.sampled_from(
    ["1180591620717411303424", "1" + "0" * 400, "1e400", "-1e-400", "-0", "-0.0", "1" * 5000, "1E+999999", "0.1e-9999"]
)
odd_strings = st.sampled_from(['"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"\\uFFFF"', '"' + "x" * 40_000 + '"'])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def raw_value(draw: st.DrawFn) -> str:
    """A JSON value as text, adversarial about half the time."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(odd_numbers)
    if kind == 1:
        return draw(odd_strings)
    if kind == 2:
        return nested(draw(st.sampled_from([100, 253, 254, 255, 600, 1019, 1021, 1100])))
    if kind == 3:
        depth = draw(st.integers(1, 300))
        return '{"a":' * depth + "1" + "}" * depth
    return json.dumps(draw(values))


@st.composite
def meta_members(draw: st.DrawFn, modern: bool) -> list[str]:
    meta = []
    if modern or draw(st.booleans()):
        meta.append(f'"{ENVELOPE}protocolVersion":' + draw(st.sampled_from(['"2026-07-28"', '"1999-01-01"', "7"])))
        meta.append(f'"{ENVELOPE}clientCapabilities":' + draw(st.sampled_from(["{}", '{"sampling":{}}', "[]"])))
    if draw(st.booleans()):
        meta.append('"progressToken":' + draw(raw_value()))
    if draw(st.booleans()):
        meta.append('"x":' + draw(raw_value()))
    return meta


@st.composite
def params(draw: st.DrawFn, modern: bool) -> str:
    members: list[str] = []
    if draw(st.booleans()):
        members.append('"name":' + json.dumps(draw(st.sampled_from(TOOLS))))
    if draw(st.booleans()):
        members.append('"arguments":' + draw(raw_value()))
    if draw(st.booleans()):
        members.append('"uri":' + json.dumps(draw(st.sampled_from(["test://x", "", "file:///etc/passwd"]))))
    if draw(st.booleans()):
        members.append('"level":' + draw(st.sampled_from(['"debug"', '["debug"]', "{}", "null", '"loud"'])))
    meta = draw(meta_members(modern))
    if meta:
        members.append('"_meta":{' + ",".join(meta) + "}")
    if draw(st.booleans()):
        members.append('"requestState":' + draw(st.sampled_from(['"i' + "0" * 24 + '.2"', '"junk"', "5"])))
    if draw(st.integers(0, 9)) == 0:
        return draw(raw_value())  # params that are not an object at all
    return "{" + ",".join(members) + "}"


@st.composite
def message(draw: st.DrawFn, modern: bool) -> str:
    parts = []
    if draw(st.integers(0, 9)):
        parts.append('"jsonrpc":' + draw(st.sampled_from(['"2.0"', '"2.0"', '"1.0"', "2", "null"])))
    if draw(st.integers(0, 4)):
        ids = ["1", '"a"', "1180591620717411303424", "1.5", "null", "true", "[1]", '{"a":1}', '"w/1"', '"evil/9"']
        parts.append('"id":' + draw(st.sampled_from(ids)))
    if draw(st.integers(0, 9)):
        parts.append('"method":' + draw(st.sampled_from([json.dumps(m) for m in METHODS] + ["7", "null", "[]"])))
    if draw(st.integers(0, 4)):
        parts.append('"params":' + draw(params(modern)))
    if draw(st.integers(0, 9)) == 0:
        parts.append('"result":' + draw(raw_value()))
    return "{" + ",".join(parts) + "}"


@st.composite
def body(draw: st.DrawFn, modern: bool) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # a batch
        return ("[" + ",".join(draw(st.lists(message(modern), max_size=3))) + "]").encode()
    if kind == 1:  # not JSON, or not UTF-8
        return draw(
            st.sampled_from([b"\xff\xfe{}", b'{"jsonrpc":"2.0","id":1,"method":"\xc3\x28"}', b"{", b"", b"nul"])
        )
    data = draw(message(modern)).encode()
    if kind == 2:
        cut = draw(st.integers(0, len(data)))
        return data[:cut]  # truncated
    if kind == 3:
        at = draw(st.integers(0, len(data)))
        return data[:at] + b"\xff\xc0" + data[at:]  # invalid UTF-8 inside
    return data


@st.composite
def request(draw: st.DrawFn, sessions: list[str]) -> tuple[str, list[tuple[str, str]], bytes]:
    modern = draw(st.booleans())
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "DELETE", "PUT"]))
    headers = {
        "Content-Type": draw(st.sampled_from(["application/json"] * 6 + ["text/plain", "application/json; x=1", ""])),
        "Accept": draw(st.sampled_from(["application/json, text/event-stream"] * 4 + ["text/html", "*/*", ""])),
    }
    session = draw(st.sampled_from([None, "", "0" * 32, "x" * 2000, "\u00e9", *sessions]))
    if session is not None and not modern:
        headers["Mcp-Session-Id"] = session
    version = "2026-07-28" if modern else draw(st.sampled_from([None, "2025-11-25", "2025-06-18", "garbage"]))
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    if modern:
        headers["Mcp-Method"] = draw(st.sampled_from(METHODS[:6]))
        headers["Mcp-Name"] = draw(st.sampled_from(TOOLS))
    if draw(st.integers(0, 5)) == 0:
        headers["Last-Event-ID"] = draw(
            st.sampled_from(["p" + "0" * 24 + ".1", "g" + "1" * 24 + ".9", "x", "p" + "f" * 24 + ".99999999999"])
        )
    if draw(st.integers(0, 5)) == 0:
        headers[draw(st.sampled_from(["X-Pad", "Origin", "Host"]))] = draw(
            st.sampled_from(["a" * 8000, "http://evil.example", "127.0.0.1", "null"])
        )
    lines = list(headers.items())
    if draw(st.integers(0, 5)) == 0:  # a second session id, or a second protocol version: the last one counts
        lines.append(
            (draw(st.sampled_from(["Mcp-Session-Id", "MCP-Protocol-Version"])), draw(st.sampled_from(sessions)))
        )
    # what an HTTP client can send at all (no control characters), adversarial within that
    return method, [(k, v) for k, v in lines if v.isascii() and v.isprintable()], draw(body(modern))


@pytest.fixture(scope="module")
def muster(muster_root: Path) -> Iterator[Muster]:
    for m in make_muster(muster_root):
        m.raw_server()
        m.discovery(prefix_mode="always")
        m.worker()
        m.ingress(MUSTER_INGRESS_MAX_BODY_BYTES=str(MAX_BODY), MUSTER_INGRESS_KEEPALIVE_SECONDS="1")
        m.wait_tools({"x_raw_echo"})
        yield m


def check(response: httpx.Response, sent: bytes) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300], sent[:300])
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json") and response.content:
        found = response.json()
        assert found["jsonrpc"] == "2.0" and ("result" in found) != ("error" in found), (found, sent[:300])


@pytest.mark.timeout(120 + EXAMPLES // 5)
def test_hostile_input_leaves_the_ingress_alive_bounded_and_serving(muster: Muster) -> None:
    ingress = psutil.Process(muster.stack.children[-1].process.pid)  # type: ignore[union-attr]
    valkey = redis.Redis.from_url(muster.valkey_url)
    sessions = [initialize(muster.url()) for _ in range(3)]
    tried = 0
    started = time.monotonic()
    http = httpx.Client(timeout=15)
    before_rss, before_valkey = ingress.memory_info().rss, int(valkey.info("memory")["used_memory"])

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=os.environ.get("MUSTER_HOSTILE_RANDOM") is None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(request(sessions))
    def hostile(sent: tuple[str, list[tuple[str, str]], bytes]) -> None:
        nonlocal tried
        method, headers, data = sent
        tried += 1
        if method == "GET":  # an event stream ends only when the client goes: read its head, then go
            with http.stream("GET", muster.url(), headers=headers) as response:
                assert response.status_code < 500
            return
        check(http.request(method, muster.url(), headers=headers, content=data), data)

    try:
        hostile()
    finally:
        http.close()
    elapsed = time.monotonic() - started
    print(f"hostile input: {tried} requests in {elapsed:.1f} s")  # the numbers for the report
    assert ingress.is_running()
    grown = ingress.memory_info().rss - before_rss
    valkey_grown = int(valkey.info("memory")["used_memory"]) - before_valkey
    print(f"ingress RSS +{grown >> 20} MB, Valkey +{valkey_grown >> 20} MB")
    assert grown < 150 << 20 and valkey_grown < 64 << 20

    async def normal_calls() -> None:
        for mode in ("legacy", "auto"):
            async with mcp_client(muster.url(), mode=mode) as client:
                result = await client.call_tool("x_raw_echo", {"n": 1})
                assert result.structured_content == {"n": 1}

    anyio.run(normal_calls)
