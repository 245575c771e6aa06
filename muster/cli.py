"""The `muster` command: `muster up` runs the whole stack on one machine, `muster dlq` looks after dead letters."""

import sys

from muster import dlq, up
from muster.options import Parser


def parser() -> Parser:
    p = Parser(prog="muster", description="An MCP aggregator on Valkey streams.")
    commands = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    up.add_parser(commands)
    dlq.add_parser(commands)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "up":
        sys.exit(up.run(args))
    if args.command == "dlq":
        sys.exit(dlq.run(args))


if __name__ == "__main__":
    main()
