"""The options of the `muster` command, each also read from a `MUSTER_` variable, validated at the edge.

An option given on the command line wins over its variable, the variable over the default. A value that does not
validate is one line that names where it came from, and exit status 2:

    muster up: --port 70000: must be a port number from 1 to 65535
    muster up: MUSTER_WORKERS='0': must be a whole number from 1 to 64
"""

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from shared import sentinel
from shared.settings import EXIT_USAGE, shown


class Invalid(ValueError, argparse.ArgumentTypeError):
    """A value that does not validate; its message says what is expected (argparse repeats it as it is)."""


def fail(prog: str, line: str) -> NoReturn:
    print(f"{prog}: {line}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (without the usage block) and the help text on --help."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")


def integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise Invalid(f"must be a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise Invalid(f"must be a whole number from {low} to {high}")
        return value

    return parse


def port(text: str) -> int:
    try:
        return integer(1, 65535)(text)
    except Invalid:
        raise Invalid("must be a port number from 1 to 65535") from None


def port_or_free(text: str) -> int:
    if text.strip() == "0":
        return 0
    try:
        return port(text)
    except Invalid:
        raise Invalid("must be a port number from 1 to 65535, or 0 for a free one") from None


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise Invalid(f"must be one of {', '.join(allowed)}")
        return text

    return parse


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise Invalid("must be true or false")


def valkey_url(text: str) -> str:
    if not text:
        return ""
    try:
        sentinel.parse(text)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return text


def memory(text: str) -> str:
    """A Valkey memory size: bytes, or a number with kb, mb or gb."""
    if not re.fullmatch(r"[1-9][0-9]*(b|kb|mb|gb)?", text.strip().lower()):
        raise Invalid("must be a size such as 1gb, 512mb or 1073741824")
    return text.strip().lower()


def folder(text: str) -> Path | None:
    if not text:
        return None
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise Invalid("is not a folder")
    return path


def path(text: str) -> Path:
    if not text.strip():
        raise Invalid("must name a folder")
    return Path(text).expanduser().resolve()


@dataclass(frozen=True)
class Option:
    flag: str  # --port
    variable: str  # MUSTER_PORT
    parse: Callable[[str], Any]
    default: str
    help: str
    metavar: str | None = None
    switch: bool = False  # a flag without a value: given means true

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        help_text = f"{self.help} [{self.variable}]"
        if self.switch:
            parser.add_argument(self.flag, dest=self.dest, action="store_const", const="true", help=help_text)
        else:
            parser.add_argument(self.flag, dest=self.dest, metavar=self.metavar, help=help_text)

    def resolve(self, given: str | None, prog: str) -> Any:
        """The option's value: from the command line, else its variable, else the default; or a one-line exit."""
        if given is not None:
            where, raw = f"{self.flag} {given}" if not self.switch else self.flag, given
        elif self.variable in os.environ:
            raw = os.environ[self.variable]
            where = f"{self.variable}={shown(self.dest, raw)}"
        else:
            where, raw = f"{self.flag} (default {self.default})", self.default
        try:
            return self.parse(raw)
        except Invalid as exc:
            fail(prog, f"{where}: {exc}")


def resolve(options: Sequence[Option], args: argparse.Namespace, prog: str) -> dict[str, Any]:
    return {o.dest: o.resolve(getattr(args, o.dest), prog) for o in options}
