"""JSON kept as the bytes it arrived as: values read where muster must decide, bytes cut out where it forwards.

muster routes on a few fields (method, id, name, uri, _meta) and forwards the rest. Re-encoding a decoded
message is not the identity: orjson reads 2**70 as a float, 1e-400 as 0.0 and -0 as 0, turns escapes into
characters, keeps the last of duplicate keys, and cannot write more than 254 levels of nesting. So a message is
decoded once to be checked and routed, and what travels on is cut out of the original bytes.

A `Document` is both: the decoded value, and the bytes. Most peers write JSON exactly as orjson would (compact,
raw UTF-8, no duplicate keys): for those, one `orjson.dumps` of the value compared with the bytes proves that
re-encoding any part is exact, and spans come from the lengths of the encoded members. Anything else (spaces,
escapes, big or odd numbers, duplicates, deep nesting) is cut by a scanner that skips values without decoding
them. Measured with bench/rawjson.py; the numbers are in that file.
"""

import json  # noqa: TID251  # the fallback for the numbers orjson refuses; never on the common path
import re
from typing import Any, NamedTuple

import orjson

__all__ = ["Document", "Malformed", "Member", "inside", "is_integer", "loads", "members", "rebuild", "skip", "string"]

_WS = re.compile(rb"[ \t\n\r]*")
# A string whole, escapes included; the unrolled form keeps the engine in one character-class loop per run.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# A number, true, false or null: everything up to the next delimiter.
_SCALAR = re.compile(rb"[^,:\[\]{}\s\"]+")
# The inside of a container up to its next bracket, strings consumed whole: one match per bracket, not per token.
_FLAT = re.compile(rb'(?:[^"\[\]{}]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.DOTALL)
_INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]*)")
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")


class Malformed(ValueError):
    """The bytes are not the JSON the caller expected."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _int(digits: str) -> int | float:
    # Python refuses to convert more than 4,300 digits; routing never reads such a number, it only forwards it.
    try:
        return int(digits)
    except ValueError:
        return float(digits)


def loads(data: bytes | memoryview) -> Any:
    """The decoded value, for reading; never for re-encoding what is forwarded.

    orjson decodes; the stdlib decodes what orjson refuses that is still JSON (numbers beyond a double's range,
    lone surrogate escapes), within orjson's own nesting bound (1,024 levels), which muster keeps.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "UTF-8" in str(exc):
            raise Malformed(str(exc)) from None
        try:
            text = bytes(data).decode("utf-8")
            return json.loads(text, parse_constant=_refuse_constant, parse_int=_int)
        except (ValueError, RecursionError) as fallback:
            raise Malformed(str(exc)) from fallback


def _ws(data: bytes, pos: int) -> int:
    match = _WS.match(data, pos)
    assert match is not None  # matches the empty string
    return match.end()


def skip(data: bytes, pos: int) -> int:
    """Where the value that starts at `pos` (no whitespace before it) ends."""
    if pos >= len(data):
        raise Malformed("a value was expected at the end of the input")
    first = data[pos]
    if first == 0x22:  # '"'
        match = _STRING.match(data, pos)
        if match is None:
            raise Malformed(f"unterminated string at {pos}")
        return match.end()
    if first in _OPEN:
        return _skip_container(data, pos)
    scalar = _SCALAR.match(data, pos)
    if scalar is None:
        raise Malformed(f"unexpected byte at {pos}")
    return scalar.end()


def _skip_container(data: bytes, pos: int) -> int:
    depth = 0
    end = len(data)
    while True:
        flat = _FLAT.match(data, pos)
        assert flat is not None  # matches the empty string
        pos = flat.end()
        if pos >= end:
            raise Malformed("unterminated container")
        c = data[pos]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        else:  # a quote that opens no complete string
            raise Malformed(f"unterminated string at {pos}")
        pos += 1
        if depth == 0:
            return pos


def string(raw: bytes) -> str:
    """A JSON string token (quotes included) as text."""
    if b"\\" not in raw:
        return raw[1:-1].decode("utf-8")
    value = json.loads(raw)
    assert isinstance(value, str)
    return value


class Member(NamedTuple):
    """Where one member of an object lies: its name's opening quote, and its value's first and past-last byte."""

    key: int
    start: int
    end: int


def members(data: bytes, start: int = 0) -> dict[str, Member]:
    """Where each member lies in the object that starts at `start` (whitespace before it allowed).

    A repeated key keeps its last value, as every JSON decoder muster talks to does.
    """
    pos = _ws(data, start)
    if data[pos : pos + 1] != b"{":
        raise Malformed(f"an object was expected at {pos}")
    found: dict[str, Member] = {}
    pos = _ws(data, pos + 1)
    if data[pos : pos + 1] == b"}":
        return found
    while True:
        key = _STRING.match(data, pos)
        if key is None:
            raise Malformed(f"a member name was expected at {pos}")
        colon = _ws(data, key.end())
        if data[colon : colon + 1] != b":":
            raise Malformed(f"':' was expected at {colon}")
        at = _ws(data, colon + 1)
        end = skip(data, at)
        found[string(key.group())] = Member(pos, at, end)
        pos = _ws(data, end)
        delimiter = data[pos : pos + 1]
        if delimiter == b"}":
            return found
        if delimiter != b",":
            raise Malformed(f"',' or '}}' was expected at {pos}")
        pos = _ws(data, pos + 1)


def inside(data: bytes) -> int:
    """Where the first member of the object `data` starts (or its closing brace, when it has none)."""
    return _ws(data, _ws(data, 0) + 1)


def is_integer(raw: bytes) -> bool:
    """The token is a JSON integer (no fraction, no exponent), of any size."""
    return _INTEGER.fullmatch(raw) is not None


def rebuild(
    data: bytes, spans: dict[str, Member], replace: dict[str, bytes], drop: frozenset[str] = frozenset()
) -> bytes:
    """The object `data` (whose members are `spans`) with the named values replaced and the named members left
    out; every other byte as it was, whitespace included. A replaced name that is absent is added first. (Of a
    repeated key only the last member is kept, as decoders read it.)"""
    members = sorted(spans.items(), key=lambda item: item[1].key)
    added = [b'"' + k.encode() + b'":' + v for k, v in replace.items() if k not in spans]
    if not members:
        return b"{" + b",".join(added) + b"}"
    out = [data[: members[0][1].key]]
    kept = [(i, name, m) for i, (name, m) in enumerate(members) if name not in drop]
    if added:
        out.append(b",".join(added) + (b"," if kept else b""))
    for n, (i, name, member) in enumerate(kept):
        value = replace[name] if name in replace else data[member.start : member.end]
        out += (data[member.key : member.start], value)
        if n + 1 < len(kept):
            out.append(data[member.end : members[i + 1][1].key])  # the comma and whitespace that followed it
    out.append(data[members[-1][1].end :])
    return b"".join(out)


class Document:
    """A JSON value as received: `value` to read, `data` to forward; `member` and `child` cut parts out of `data`,
    `rebuilt` changes a few members of an object and keeps every other byte."""

    __slots__ = ("_canonical", "_spans", "data", "value")

    def __init__(self, data: bytes, value: Any, canonical: bool | None = None) -> None:
        self.data = data
        self.value = value
        self._canonical = canonical
        self._spans: dict[str, Member] | None = None

    @classmethod
    def parse(cls, data: bytes) -> "Document":
        return cls(data, loads(data))

    @property
    def canonical(self) -> bool:
        """orjson writes this value as exactly these bytes, and so each part of it as exactly that part."""
        if self._canonical is None:
            try:
                self._canonical = orjson.dumps(self.value) == self.data
            except orjson.JSONEncodeError:  # nested too deeply for orjson to write
                self._canonical = False
        return self._canonical

    def spans(self) -> dict[str, Member]:
        """Where each member of this object lies in `data`."""
        if self._spans is None:
            self._spans = members(self.data)
        return self._spans

    def member(self, name: str) -> bytes | None:
        """The bytes of a member's value, as received; None when the object has no such member."""
        if not isinstance(self.value, dict) or name not in self.value:
            return None
        if self.canonical:
            return self._canonical_member(name)
        span = self.spans().get(name)
        return None if span is None else self.data[span.start : span.end]

    def _canonical_member(self, name: str) -> bytes:
        # Canonical: '{' then '"key":value' joined by ','. Every other member is measured by encoding it (they are
        # the small ones on muster's paths), so the wanted one, often large, is never encoded again.
        before = after = 0
        seen = False
        for key, value in self.value.items():
            if key == name:
                seen = True
                continue
            size = len(orjson.dumps(key)) + 1 + len(orjson.dumps(value)) + 1  # '"key":value,'
            if seen:
                after += size
            else:
                before += size
        start = 1 + before + len(orjson.dumps(name)) + 1
        return self.data[start : len(self.data) - 1 - after]

    def child(self, name: str) -> "Document | None":
        """A member's value as a Document of its own."""
        data = self.member(name)
        if data is None:
            return None
        return Document(data, self.value[name], True if self._canonical else None)

    def rebuilt(self, replace: dict[str, bytes], drop: frozenset[str] = frozenset()) -> bytes:
        """This object with the named members' values replaced by these bytes and the `drop` members left out;
        every other member as received, in its order."""
        if self.canonical:
            kept = {k: v for k, v in self.value.items() if k not in drop}
            added = {k: orjson.Fragment(v) for k, v in replace.items() if k not in kept}
            for k, v in replace.items():
                if k in kept:
                    kept[k] = orjson.Fragment(v)  # in its place
            return orjson.dumps({**added, **kept})
        return rebuild(self.data, self.spans(), replace, drop)
