import asyncio
import hashlib
import io
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from shared import logs
from shared.logs import CallRecord, JsonFormatter, PrincipalHasher, Redactor, log_call, request_scope

JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImF1ZCI6Im11c3RlciJ9."
    "c2lnbmF0dXJlLW9mLXRoZS10b2tlbi1oZXJlLWl0LWlzLWxvbmc"
)


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test"))
    handler.addFilter(Redactor())
    logger = logging.getLogger(f"test.logs.{time.monotonic_ns()}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def read(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_line_inside_a_request_scope_carries_its_request_id(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines

    async def child() -> None:
        logger.info("in a task started inside the scope")

    async def main() -> None:
        with request_scope("r-1"):
            logger.info("inside")
            await asyncio.create_task(child())
        logger.info("outside")

    asyncio.run(main())
    assert [(e["msg"], e.get("request_id")) for e in read(out)] == [
        ("inside", "r-1"),
        ("in a task started inside the scope", "r-1"),
        ("outside", None),
    ]
    assert len(logs.new_request_id()) == 16 and logs.new_request_id() != logs.new_request_id()


def test_the_call_line_has_the_fields_of_a_call_and_a_short_session(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    hasher = PrincipalHasher(b"k" * 32)
    record = CallRecord(
        request_id="r-2",
        session="0123456789abcdef0123",
        principal=hasher("alice@example.com"),
        server="gazelle",
        tool="list",
        method="tools/call",
        outcome="ok",
        total_ms=4.2,
        upstream_ms=3.1,
    )
    log_call(logger, record)
    (line,) = read(out)
    assert line["msg"] == "call" and line["request_id"] == "r-2" and line["session"] == "01234567"
    assert (line["server"], line["tool"], line["method"], line["outcome"]) == ("gazelle", "list", "tools/call", "ok")
    assert (line["total_ms"], line["upstream_ms"]) == (4.2, 3.1) and "queue_ms" not in line
    assert "alice" not in json.dumps(line)


def test_the_principal_hash_is_keyed() -> None:
    a, b = PrincipalHasher(b"a" * 32), PrincipalHasher(b"b" * 32)
    assert a("alice") == a(b"alice") != a("bob")
    assert a("alice") != b("alice")
    assert a("alice") not in hashlib.sha256(b"alice").hexdigest()
    with pytest.raises(ValueError):
        PrincipalHasher(b"short")


@pytest.mark.parametrize(
    "log",
    [
        lambda lg: lg.info("upstream said %s", f"Authorization: Bearer {JWT[:40]}"),
        lambda lg: lg.info("token " + JWT),
        lambda lg: lg.warning("refresh failed", extra={"response": {"access_token": JWT}}),
        lambda lg: lg.info("header: bearer abcdefghijklmnopqrstuvwxyz0123"),
    ],
)
def test_a_line_that_carries_a_bearer_token_or_a_jwt_is_withheld(
    lines: tuple[logging.Logger, io.StringIO], log: Callable[[logging.Logger], None]
) -> None:
    logger, out = lines
    log(logger)
    (line,) = read(out)
    assert JWT[:20] not in out.getvalue() and "abcdefghijklmnop" not in out.getvalue()
    assert str(line["msg"]).startswith("log line withheld: it looked like it carried a credential (test_logs.py:")
    assert "response" not in line


def test_an_exception_that_quotes_a_token_is_withheld_too(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = lines
    try:
        raise RuntimeError(f"401 for token {JWT}")
    except RuntimeError:
        logger.exception("call failed")
    (line,) = read(out)
    assert JWT[:20] not in out.getvalue() and "exc" not in line


def test_ordinary_lines_pass_unchanged(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = lines
    logger.info("bearer tokens are refreshed every %d s for %s", 300, "gazelle", extra={"server": "gazelle"})
    logger.info("a JWT starts with eyJ, and eyJhbGciOi alone is no token")
    assert [e["msg"] for e in read(out)] == [
        "bearer tokens are refreshed every 300 s for gazelle",
        "a JWT starts with eyJ, and eyJhbGciOi alone is no token",
    ]


def test_redact_replaces_only_the_credential() -> None:
    assert logs.redact(f"failed: Bearer {JWT} at gazelle") == f"failed: {logs.WITHHELD} at gazelle"


def test_configure_installs_the_guard_on_the_handler() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("test")
        assert any(isinstance(f, Redactor) for f in root.handlers[0].filters)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The service's own log setup (logs.configure), writing to a buffer instead of stderr."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    for name in ("_fast", "_text"):  # what configure sets, put back afterwards
        monkeypatch.setattr(logs, name, getattr(logs, name))
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("ingress")
        yield out
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_the_call_line_takes_the_short_way_and_reads_as_every_other_line(configured: io.StringIO) -> None:
    logger = logging.getLogger("services.ingress.telemetry")
    record = CallRecord("r-3", "0123456789", "p" * 16, "gazelle", "list", "tools/call", "ok", 1.5, 0.25, 1.0, "s-3")
    log_call(logger, record)
    with request_scope("r-3"):
        logger.info("call", extra=record.fields())  # the long way, through LogRecord, guard and formatter
    short, long = read(configured)
    assert short.keys() == long.keys() and {k: v for k, v in short.items() if k != "time"} == {
        k: v for k, v in long.items() if k != "time"
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(short["time"]))


def test_a_call_line_that_would_carry_a_token_is_withheld_on_the_short_way_too(configured: io.StringIO) -> None:
    logger = logging.getLogger("services.ingress.telemetry")
    log_call(logger, CallRecord("r-4", "s", "p", "gazelle", JWT, "tools/call", "ok", 1.0))
    (line,) = read(configured)
    assert JWT not in json.dumps(line) and "withheld" in str(line["msg"])


def test_a_call_line_below_the_level_costs_nothing(configured: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    log_call(logging.getLogger("test.logs.below"), CallRecord("r", "s", "p", "g", "t", "m", "ok", 1.0))
    assert configured.getvalue() == ""


def test_the_call_lines_of_one_loop_turn_go_out_in_one_write(configured: io.StringIO) -> None:
    writes: list[str] = []
    write = configured.write

    def counted(text: str) -> int:
        writes.append(text)
        return write(text)

    configured.write = counted  # type: ignore[method-assign]
    logger = logging.getLogger("services.ingress.telemetry")

    async def turn() -> None:
        for n in range(3):
            log_call(logger, CallRecord(f"r-{n}", "s", "p", "g", "t", "m", "ok", 1.0))
        assert writes == []  # not yet: at the end of the turn
        await asyncio.sleep(0)
        assert len(writes) == 1

    asyncio.run(turn())
    assert [line["request_id"] for line in read(configured)] == ["r-0", "r-1", "r-2"]


def test_in_text_lines_the_call_line_says_its_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    for name in ("_fast", "_text"):
        monkeypatch.setattr(logs, name, getattr(logs, name))
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("ingress", json=False)
        log_call(logging.getLogger("services.ingress.telemetry"), CallRecord("r-5", "s", "p", "g", "t", "m", "ok", 1.5))
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert (
        out.getvalue()
        .rstrip()
        .endswith(
            "ingress INFO services.ingress.telemetry: call request_id=r-5 session=s principal=p server=g tool=t "
            "method=m outcome=ok total_ms=1.5"
        )
    )
