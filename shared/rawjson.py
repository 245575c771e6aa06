"""JSON kept as the bytes it arrived as: values read where muster must decide, bytes cut out where it forwards.

muster routes on a few fields (method, id, name, uri, _meta) and forwards the rest. Re-encoding a decoded
message is not the identity: orjson reads 2**70 as a float, 1e-400 as 0.0 and -0 as 0, turns escapes into
characters, keeps the last of duplicate keys, and cannot write more than 254 levels of nesting. So a message is
decoded once to be checked and routed, and what travels on is cut out of the original bytes.

A `Document` is both: the decoded value, and the bytes. Most peers write JSON exactly as orjson would (compact,
raw UTF-8, no duplicate keys): for those, one `orjson.dumps` of the value compared with the bytes proves that
re-encoding any part is exact, so a part's bytes are the encoding of its value, or what is left of the bytes
around the (small) encoded other members. Anything else (spaces, escapes, big or odd numbers, duplicates, deep
nesting) is cut where `members` finds each member: the stdlib's C scanner skips each value (over the bytes read
as latin-1, so that offsets are byte offsets), at about a fifth of orjson's speed; a regex scanner takes over
where it would recurse too deep. Measured with bench/rawjson.py; the numbers are in that file.
"""

import json  # noqa: TID251  # its C scanner finds where values end; its parser takes the numbers orjson refuses
import re
from json.scanner import make_scanner  # noqa: TID251
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
_SPACE = frozenset(b" \t\n\r")
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


# Where values end, and nothing else: numbers stay text, objects become their member count.
_CONTEXT = json.JSONDecoder(parse_int=str.strip, parse_float=str.strip, parse_constant=str.strip, object_pairs_hook=len)
_SCAN = make_scanner(_CONTEXT)  # type: ignore[arg-type]  # typeshed names the scanner where its context goes
# A member's name and the colon after it, over text read as latin-1: a plain name in group 1, an escaped one in 2.
_NAME = re.compile(r'[ \t\n\r]*(?:"([^"\\]*)"|("[^"\\]*(?:\\.[^"\\]*)*"))[ \t\n\r]*:[ \t\n\r]*', re.DOTALL)
_NEXT = re.compile(r"[ \t\n\r]*([,}])[ \t\n\r]*")
# The common member whole, in one match: a plain name, a string, number or literal value, and what follows it.
_SIMPLE = re.compile(
    r'"([^"\\]*)"[ \t\n\r]*:[ \t\n\r]*("[^"\\]*(?:\\.[^"\\]*)*"|[-0-9][-+.0-9eE]*|true|false|null)'
    r"[ \t\n\r]*([,}])[ \t\n\r]*",
    re.DOTALL,
)
_OPENING = re.compile(r"[ \t\n\r]*\{[ \t\n\r]*")


def _end(text: str, data: bytes, pos: int) -> int:
    try:
        return int(_SCAN(text, pos)[1])
    except RecursionError:  # deeper than the C scanner goes: the regex scanner has no recursion
        return skip(data, pos)
    except StopIteration:
        raise Malformed(f"a value was expected at {pos}") from None


def _last(data: bytes, at: int) -> int | None:
    """Where the value that starts at `at` ends if it is the last member of the object `data` (whole), else None.

    The test is a decoder's: between `at` and the object's closing brace there is exactly one JSON value only if no
    member follows (a following member leaves ', "name": value' after it, which no decoder takes).
    """
    end = len(data)
    while end and data[end - 1] in _SPACE:
        end -= 1
    end -= 1  # the closing brace
    while end and data[end - 1] in _SPACE:
        end -= 1
    try:
        orjson.loads(memoryview(data)[at:end])
    except orjson.JSONDecodeError:
        return None
    return end


def members(data: bytes, start: int = 0, *, count: int | None = None) -> dict[str, Member]:
    """Where each member lies in the object that starts at `start` (whitespace before it allowed).

    A repeated key keeps its last value, as every JSON decoder muster talks to does. With `count`, the number of
    distinct names the object has (its decoded dict's length) and `start` 0 (`data` is the object), the value of
    the member that completes the count is first tried as the last one: one orjson parse of it, not a scan, and
    no scan at all of what it holds, which is where large payloads are.
    """
    text = data.decode("latin-1")  # one character per byte: offsets in the text are offsets in the bytes
    opening = _OPENING.match(text, start)
    if opening is None:
        raise Malformed(f"an object was expected at {start}")
    found: dict[str, Member] = {}
    first = opening.end()
    if text[first : first + 1] == "}":
        return found
    at: int | None = first
    while at is not None:
        at = _member(text, data, at, found, count if start == 0 else None)
    return found


_new = tuple.__new__  # a Member without NamedTuple's Python-level constructor: a fifth of the cost


def _plain(name: str) -> str:
    return name if name.isascii() else name.encode("latin-1").decode("utf-8")


def _member(text: str, data: bytes, pos: int, found: dict[str, Member], count: int | None) -> int | None:
    """Reads the member at `pos` into `found`; returns where the next one starts, None after the last."""
    simple = _SIMPLE.match(text, pos)
    if simple is not None:
        found[_plain(simple.group(1))] = _new(Member, (pos, simple.start(2), simple.end(2)))
        return None if simple.group(3) == "}" else simple.end()
    name = _NAME.match(text, pos)
    if name is None:
        raise Malformed(f"a member name was expected at {pos}")
    plain = name.group(1)
    key = _plain(plain) if plain is not None else string(name.group(2).encode("latin-1"))
    end = None
    if count is not None and len(found) == count - 1 and key not in found:
        end = _last(data, name.end())
    if end is None:
        end = _end(text, data, name.end())
    found[key] = _new(Member, (pos, name.end(), end))
    delimiter = _NEXT.match(text, end)
    if delimiter is None:
        raise Malformed(f"',' or '}}' was expected at {end}")
    return None if delimiter.group(1) == "}" else delimiter.end()


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
            self._spans = members(self.data, count=len(self.value) if isinstance(self.value, dict) else None)
        return self._spans

    def member(self, name: str) -> bytes | None:
        """The bytes of a member's value, as received; None when the object has no such member."""
        if not isinstance(self.value, dict) or name not in self.value:
            return None
        if self.canonical:
            value = self.value[name]
            if not isinstance(value, (dict, list)):
                return orjson.dumps(value)  # small: encoded again, it is what was received
            return self._canonical_member(name)
        span = self.spans().get(name)
        return None if span is None else self.data[span.start : span.end]

    def _canonical_member(self, name: str) -> bytes:
        # Canonical: '{' then '"key":value' joined by ','. Every other member is measured by encoding it, so the
        # wanted one, often the large one (params, result), is never encoded again.
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
