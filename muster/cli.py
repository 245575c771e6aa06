"""The `muster` command: `muster up` runs the whole stack on one machine, `muster status` shows how it is doing,
`muster dlq` looks after dead letters."""

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import RedisError

from muster import dlq, status, up
from muster.options import Parser
from muster.up import VALKEY_URL_FILE

__all__ = ["VALKEY_URL_FILE", "main", "parser", "show_status", "valkey_url"]


def parser() -> Parser:
    p = Parser(prog="muster", description="An MCP aggregator on Valkey streams.")
    commands = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    up.add_parser(commands)
    _add_status(commands)
    dlq.add_parser(commands)
    return p


def _add_status(commands: Any) -> None:
    st = commands.add_parser("status", help="servers, queues, workers and replicas, as Valkey knows them")
    st.prog = "muster status"
    st.add_argument(
        "--valkey-url",
        default=os.environ.get("MUSTER_VALKEY_URL", ""),
        help="the Valkey to read (default: the one `muster up` runs, else redis://127.0.0.1:6379/0) "
        "[MUSTER_VALKEY_URL]",
    )
    st.add_argument("--data", default=os.environ.get("MUSTER_DATA", ".muster"), help="`muster up`'s data folder")
    st.add_argument("--json", action="store_true", help="one JSON object, for scripts")


def valkey_url(args: argparse.Namespace) -> str:
    if args.valkey_url:
        return str(args.valkey_url)
    written = Path(args.data) / VALKEY_URL_FILE
    if written.is_file():
        return written.read_text().strip()
    return "redis://127.0.0.1:6379/0"


def show_status(args: argparse.Namespace) -> int:
    url = valkey_url(args)
    try:
        found = asyncio.run(status.status(url))
    except (RedisError, OSError, TimeoutError, ValueError) as exc:  # ValueError: a URL that names no Valkey
        print(f"muster: cannot read {status.without_password(url)}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(found.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(status.render(found))
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "up":
        sys.exit(up.run(args))
    if args.command == "status":
        sys.exit(show_status(args))
    if args.command == "dlq":
        sys.exit(dlq.run(args))


if __name__ == "__main__":
    main()
