"""Go's encoding/json and fmt, as far as the meta-tools' texts depend on them.

Agents written for the Go muster parse the JSON inside the meta-tools' text results, and the bytes of those texts
are what an agent pays for in tokens, so they are written as Go writes them: `json.MarshalIndent(v, "", "  ")` or
`json.Marshal(v)`, HTML characters escaped, floats in Go's shortest form (1 not 1.0, 1e-7 not 1e-07). Objects keep
the order they are built in: muster builds Go structs in field order and Go maps with sorted keys; what an upstream
sent (schemas, content, structuredContent) keeps the upstream's order.
"""

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

# Go escapes these inside strings by default (json.Encoder.SetEscapeHTML(true) is what Marshal uses).
_HTML = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def marshal(value: Any) -> str:
    """json.Marshal(value)."""
    parts: list[str] = []
    _encode(value, parts, None, "")
    return _escape_html("".join(parts))


def marshal_indent(value: Any) -> str:
    """json.MarshalIndent(value, "", "  ")."""
    parts: list[str] = []
    _encode(value, parts, "  ", "\n")
    return _escape_html("".join(parts))


def _escape_html(text: str) -> str:
    # The characters can only occur inside JSON strings, so replacing them in the whole text is exact.
    for char, escaped in _HTML:
        if char in text:
            text = text.replace(char, escaped)
    return text


def _encode(value: Any, out: list[str], indent: str | None, newline: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(format_float(value))
    elif isinstance(value, Mapping):
        _encode_object(value, out, indent, newline)
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        _encode_array(value, out, indent, newline)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _string(text: str) -> str:
    # orjson escapes a string exactly as json.dumps(text, ensure_ascii=False) does (checked over every code point
    # but the surrogates, which no JSON muster parsed can hold), in half the time; the HTML escapes come after.
    return orjson.dumps(text).decode()


def _encode_object(value: Mapping[Any, Any], out: list[str], indent: str | None, newline: str) -> None:
    if not value:
        out.append("{}")
        return
    inner = newline + indent if indent is not None else ""
    out.append("{")
    for i, (key, item) in enumerate(value.items()):
        if i:
            out.append(",")
        out.append(inner)
        out.append(_string(str(key)))
        out.append(": " if indent is not None else ":")
        _encode(item, out, indent, inner)
    out.append(newline + "}" if indent is not None else "}")


def _encode_array(value: Sequence[Any], out: list[str], indent: str | None, newline: str) -> None:
    if not value:
        out.append("[]")
        return
    inner = newline + indent if indent is not None else ""
    out.append("[")
    for i, item in enumerate(value):
        if i:
            out.append(",")
        out.append(inner)
        _encode(item, out, indent, inner)
    out.append(newline + "]" if indent is not None else "]")


def format_float(value: float) -> str:
    """encoding/json's float64: positional between 1e-6 and 1e21, else exponent without a leading zero."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"unsupported value: {value}")
    shortest = repr(value)  # the shortest digits that round-trip, which is also what Go chooses
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, _, exponent = shortest.partition("e")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        sign = exponent[0] if exponent[0] in "+-" else "+"
        digits = exponent.lstrip("+-").lstrip("0") or "0"
        return f"{mantissa}e{sign}{digits.zfill(2) if sign == '+' else digits}"
    text = format(Decimal(shortest).normalize(), "f")
    return "0" if text in ("-0", "0") and math.copysign(1, value) > 0 else text


def format_g(value: float) -> str:
    """fmt's %v of a float64: %g with the shortest digits, exponent form below 1e-4 and from 1e+06 (1e+06, 123456)."""
    if value == 0:
        return "0" if math.copysign(1, value) > 0 else "-0"
    digits, exponent = _shortest(value)
    if exponent < -4 or exponent >= 6:
        return _exponent_form(value, digits, exponent)
    return format(Decimal(repr(value)).normalize(), "f")


def _shortest(value: float) -> tuple[str, int]:
    sign_digits_exp = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in sign_digits_exp.digits)
    exponent = len(digits) - 1 + int(sign_digits_exp.exponent)
    return digits, exponent


def _exponent_form(value: float, digits: str, exponent: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if value < 0 else ""
    return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def format_v(value: Any) -> str:
    """fmt's %v of a value decoded from JSON (string, float64, bool, nil, []any, map[string]any)."""
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return format_g(float(value))
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{format_v(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, Sequence):
        return "[" + " ".join(format_v(v) for v in value) + "]"
    return str(value)


def lower(text: str) -> str:
    """strings.ToLower: one rune to one rune (Python's lower() turns İ into two characters and Σ by context)."""
    if text.isascii():
        return text.lower()
    return "".join(c.lower()[0] for c in text)


def quote(text: str) -> str:
    """strconv.Quote (fmt's %q of a string): printable characters kept, the rest escaped Go-style."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        elif char in _SHORT:
            out.append(_SHORT[char])
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
