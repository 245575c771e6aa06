"""`muster dlq`: the calls set aside on the dead-letter stream (streams.DEAD_LETTER) after they failed on too many
workers in a row.

    muster dlq list [--json]              what is there, oldest first
    muster dlq show ID [--json]           one dead letter, its parameters included
    muster dlq replay ID [--wait S]       its server runs it again, as a new call; prints the outcome
    muster dlq drop ID                    forget it

Which Valkey: --valkey URL (MUSTER_VALKEY_URL), else the one a `muster up` running with the data folder --data
(MUSTER_DATA, default .muster) started. A replayed call is a new call outside any agent session (its caller was
answered long ago): it gets a reply stream of this command's own and a new deadline, and leaves the dead-letter
stream once it is queued. A call that is not safe to run twice may already have run; replaying it takes --force.
"""

import argparse
import asyncio
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from muster.options import Invalid, Option, Parser, fail, path, resolve, valkey_url
from muster.up import read_state
from services.ingress.config import IngressSettings
from shared import streams
from shared.lifecycle import instance_id
from shared.messages import Call, CallReply, ReplyKind, read_reply
from shared.settings import load
from shared.valkey import BLOCK_SECONDS, Outbox, connect, enqueue

PROG = "muster dlq"
EXIT_FAILED = 1
REPLY_GRACE = 5.0  # past the replayed call's deadline, the worker's own "deadline exceeded" is still on its way

OPTIONS = (
    Option("--valkey", "MUSTER_VALKEY_URL", valkey_url, "", "the Valkey to look in", "URL"),
    Option("--data", "MUSTER_DATA", path, ".muster", "the data folder of a running muster up (no --valkey)", "DIR"),
)


def entry_id(text: str) -> bytes:
    milliseconds, dash, sequence = text.partition("-")
    if not (milliseconds.isdigit() and dash and sequence.isdigit()):
        raise Invalid(f"{text!r} is not a dead letter's id (like 1733000000000-0; see muster dlq list)")
    return text.encode()


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Invalid(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 24 * 3600:
        raise Invalid("must be more than 0 and at most a day")
    return value


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("dlq", help="list, show, replay or drop dead-lettered calls")
    parser.prog = PROG
    actions = parser.add_subparsers(dest="action", required=True, parser_class=Parser)
    listing = actions.add_parser("list", help="the dead letters, oldest first")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    show = actions.add_parser("show", help="one dead letter, with its parameters")
    show.add_argument("id", type=entry_id)
    show.add_argument("--json", action="store_true", help="one JSON document")
    again = actions.add_parser("replay", help="run a dead-lettered call again and print its outcome")
    again.add_argument("id", type=entry_id)
    again.add_argument("--wait", type=seconds, default=60.0, help="its deadline, in seconds from now (default 60)")
    again.add_argument("--force", action="store_true", help="replay a call that is not safe to run twice")
    drop = actions.add_parser("drop", help="delete a dead letter")
    drop.add_argument("id", type=entry_id)
    for action in (listing, show, again, drop):
        action.prog = f"{PROG} {action.prog.rsplit(' ', 1)[-1]}"
        for option in OPTIONS:
            option.add_to(action)


def run(args: argparse.Namespace) -> int:
    o = resolve(OPTIONS, args, PROG)
    url = o["valkey"] or _running(o["data"])
    try:
        return asyncio.run(_run(args, url))
    except (RedisError, ConnectionError, OSError) as exc:
        fail(PROG, f"cannot reach valkey: {exc}")


def _running(data: Path) -> str:
    state = read_state(data)
    if state is None or not state.get("valkey_url"):
        fail(PROG, f"no Valkey: give --valkey URL (or MUSTER_VALKEY_URL), or run muster up with --data {data}")
    url: str = state["valkey_url"]
    return url


async def _run(args: argparse.Namespace, url: str) -> int:
    client = connect(url, name="muster-dlq")
    try:
        if args.action == "list":
            return await _list(client, args.json)
        if args.action == "show":
            return _show(args.id, await _entry(client, args.id), args.json)
        if args.action == "drop":
            await _entry(client, args.id)
            await client.xdel(streams.DEAD_LETTER, args.id)
            print(f"dropped {args.id.decode()}")
            return 0
        return await _replay(client, url, args.id, args.wait, args.force)
    finally:
        await client.aclose()


async def _entry(client: Redis, dead_id: bytes) -> dict[bytes, bytes]:
    found: Any = await client.xrange(streams.DEAD_LETTER, dead_id, dead_id)
    if not found:
        fail(PROG, f"no dead letter {dead_id.decode()} (see muster dlq list)")
    fields: dict[bytes, bytes] = found[0][1]
    return fields


def describe(dead_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A dead letter as `list` and `show` print it (without the call's parameters)."""
    text = {k.decode(): v.decode(errors="replace") for k, v in fields.items() if k != b"params"}
    try:
        params = orjson.loads(fields.get(b"params", b"{}"))
    except orjson.JSONDecodeError:
        params = {}
    target = (params.get("name") or params.get("uri") or "") if isinstance(params, dict) else ""
    set_aside = datetime.fromtimestamp(int(dead_id.split(b"-")[0]) / 1000).isoformat(sep=" ", timespec="seconds")
    return {
        "id": dead_id.decode(),
        "set_aside": set_aside,
        "server": text.get("server", ""),
        "method": text.get("method", ""),
        "target": target,
        "deliveries": int(text.get("deliveries", "0") or 0),
        "safe": text.get("safe") == "1",
        "entry": text.get("entry", ""),
        "session": text.get("session", ""),
        "principal": text.get("principal", ""),
    }


async def _list(client: Redis, as_json: bool) -> int:
    found: Any = await client.xrange(streams.DEAD_LETTER)
    letters = [describe(dead_id, fields) for dead_id, fields in found]
    if as_json:
        print(orjson.dumps(letters).decode())
        return 0
    if not letters:
        print("no dead letters")
        return 0
    rows = [("ID", "SET ASIDE", "SERVER", "CALL", "DELIVERIES", "SAFE")]
    for d in letters:
        call = f"{d['method']} {d['target']}".strip()
        rows.append((d["id"], d["set_aside"], d["server"], call, str(d["deliveries"]), "yes" if d["safe"] else "no"))
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _show(dead_id: bytes, fields: dict[bytes, bytes], as_json: bool) -> int:
    letter = describe(dead_id, fields)
    try:
        letter["params"] = orjson.loads(fields.get(b"params", b"null"))
    except orjson.JSONDecodeError:
        letter["params"] = fields[b"params"].decode(errors="replace")
    if as_json:
        print(orjson.dumps(letter).decode())
        return 0
    for name, value in letter.items():
        if name == "params":
            value = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode().replace("\n", "\n    ")
        elif name == "safe":
            value = "yes" if value else "no (it may have run; replaying it takes --force)"
        print(f"{name + ':':12}{value}")
    return 0


async def _replay(client: Redis, url: str, dead_id: bytes, wait: float, force: bool) -> int:
    fields = await _entry(client, dead_id)
    try:
        call = Call.from_fields(fields)
    except (KeyError, ValueError):
        fail(PROG, f"dead letter {dead_id.decode()} holds no call that can run again")
    if not call.safe and not force:
        fail(PROG, f"{dead_id.decode()} is not safe to run twice and may have run already; replay it with --force")
    replica = f"dlq-{instance_id()}"
    again = replace(
        call,
        call_id=b"1",
        replica=replica.encode(),
        session=b"",
        deadline_ms=int((time.time() + wait) * 1000),
        key=f"dlq/{replica}".encode(),
    )
    outbox = Outbox(url, name="muster-dlq-out")
    try:
        queued = await enqueue(outbox, again, load(IngressSettings).queue_limit)
    finally:
        outbox.close()
    if queued is None:
        fail(PROG, f"the queue of {call.server.decode()} is full; try again later")
    await client.xdel(streams.DEAD_LETTER, dead_id)
    print(f"replaying {dead_id.decode()} as {queued.decode()} on {call.server.decode()}", file=sys.stderr)
    try:
        reply = await _outcome(client, streams.replies(replica), wait + REPLY_GRACE)
    finally:
        await client.delete(streams.replies(replica))
    if reply is None:
        print(f"no outcome within {wait + REPLY_GRACE:g} s", file=sys.stderr)
        return EXIT_FAILED
    member = "result" if reply.kind is ReplyKind.RESULT else "error"
    print(orjson.dumps({member: orjson.loads(reply.body)}, option=orjson.OPT_INDENT_2).decode())
    return 0 if reply.kind is ReplyKind.RESULT else EXIT_FAILED


async def _outcome(client: Redis, stream: str, within: float) -> CallReply | None:
    """The replayed call's final reply on this command's own reply stream (relayed messages are passed over)."""
    cursor = b"0-0"
    give_up = time.monotonic() + within
    while (left := give_up - time.monotonic()) > 0:
        block = int(min(left, BLOCK_SECONDS) * 1000) or 1
        found: Any = await client.xread({stream: cursor}, block=block)
        for _, entries in found or []:
            for entry, fields in entries:
                cursor = entry
                reply = read_reply(fields)
                if isinstance(reply, CallReply) and reply.final:
                    return reply
    return None
