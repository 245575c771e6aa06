"""What muster forwards is cut out of the bytes it received: spans agree with a full decoder on any JSON."""

import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.rawjson import Document, Malformed, is_integer, loads, members, rebuild, skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)
objects = st.dictionaries(st.text(max_size=8), values, min_size=1, max_size=6)
# How peers write JSON: compact, spaced, indented, escaped or raw UTF-8.
styles = st.sampled_from(
    [
        {"separators": (",", ":"), "ensure_ascii": False},
        {"separators": (", ", ": "), "ensure_ascii": True},
        {"indent": 2, "ensure_ascii": False},
        {"separators": (" ,\t", " :\r\n "), "ensure_ascii": True},
    ]
)


@settings(max_examples=300, deadline=None)
@given(objects, styles)
def test_each_members_span_decodes_to_that_members_value(value: dict[str, Any], style: dict[str, Any]) -> None:
    data = json.dumps(value, **style).encode()
    spans = members(data)
    assert list(spans) == list(value)
    for key, span in spans.items():
        assert json.loads(data[span.start : span.end]) == value[key]
        assert data[span.key : span.start].rsplit(b":", 1)[0].strip() == json.dumps(key, **style).encode()


@settings(max_examples=300, deadline=None)
@given(objects, styles)
def test_a_document_forwards_the_bytes_it_received_whatever_their_style(
    value: dict[str, Any], style: dict[str, Any]
) -> None:
    data = json.dumps(value, **style).encode()
    doc = Document.parse(data)
    for key in value:
        part = doc.member(key)
        assert part is not None
        assert part in data  # cut out, not re-encoded
        assert json.loads(part) == value[key]


@settings(max_examples=200, deadline=None)
@given(objects)
def test_canonical_and_scanned_spans_agree(value: dict[str, Any]) -> None:
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    canonical, scanned = Document.parse(data), Document(data, loads(data), canonical=False)
    assume(canonical.canonical)  # what orjson writes as it was written: most of it
    for key in value:
        assert canonical.member(key) == scanned.member(key)
    assert canonical.rebuilt({"zz": b"1"}, frozenset(list(value)[:1])) == scanned.rebuilt(
        {"zz": b"1"}, frozenset(list(value)[:1])
    )


ODD = (
    b'{"big": 1180591620717411303424, "huge": 1' + b"0" * 400 + b', "tiny": 1e-400, "negzero": -0.0, "zero": -0,'
    b' "esc": "\\u00e9\\ud83d\\ude00\\/", "dup": 1, "dup": 2, "order": {"b": 1, "a": 2}}'
)


def test_numbers_escapes_and_order_a_decoder_would_lose_are_cut_out_exactly() -> None:
    doc = Document.parse(ODD)
    assert not doc.canonical
    assert doc.member("big") == b"1180591620717411303424"
    assert doc.member("huge") == b"1" + b"0" * 400
    assert doc.member("tiny") == b"1e-400"
    assert doc.member("negzero") == b"-0.0"
    assert doc.member("zero") == b"-0"
    assert doc.member("esc") == b'"\\u00e9\\ud83d\\ude00\\/"'
    assert doc.member("dup") == b"2"  # the last one, as decoders read it
    assert doc.member("order") == b'{"b": 1, "a": 2}'
    assert doc.value["huge"] == float("inf") or doc.value["huge"] == 10**400


def test_rebuilding_replaces_and_drops_members_and_keeps_every_other_byte() -> None:
    data = b'{ "name" : "x_alpha_get",\n "arguments": {"n": 1180591620717411303424, "n": -0}, "_meta": {} }'
    doc = Document.parse(data)
    out = doc.rebuilt({"name": b'"get"'}, frozenset({"_meta"}))
    assert out == b'{ "name" : "get",\n "arguments": {"n": 1180591620717411303424, "n": -0} }'
    assert rebuild(data, members(data), {"new": b"true"}).startswith(b'{ "new":true,"name" : "x_alpha_get"')
    assert rebuild(data, members(data), {}, frozenset({"name", "arguments"})) == b'{ "_meta": {} }'
    assert rebuild(data, members(data), {}, frozenset({"name", "arguments", "_meta"})) == b"{  }"
    assert rebuild(b"{}", {}, {"a": b"1"}) == b'{"a":1}'


def test_nesting_beyond_what_orjson_writes_is_still_cut_out() -> None:
    deep = b'{"a": ' + b"[" * 600 + b"]" * 600 + b', "b": 2}'
    doc = Document.parse(deep)
    assert not doc.canonical  # orjson cannot write 600 levels
    assert doc.member("a") == b"[" * 600 + b"]" * 600
    assert doc.rebuilt({"b": b"3"}) == b'{"a": ' + b"[" * 600 + b"]" * 600 + b', "b": 3}'


def test_what_is_not_json_is_refused() -> None:
    for bad in (b"{", b'{"a":}', b"NaN", b'{"a": Infinity}', b'"\xff"', b"[" * 1100 + b"]" * 1100, b""):
        with pytest.raises(Malformed):
            loads(bad)


def test_the_scanner_refuses_what_it_cannot_skip() -> None:
    for bad, pos in ((b'"abc', 0), (b"[1, 2", 0), (b'{"a": "b}', 0), (b"", 0)):
        with pytest.raises(Malformed):
            skip(bad, pos)
    with pytest.raises(Malformed):
        members(b"[1]")


def test_integers_of_any_size_are_integers_and_nothing_else_is() -> None:
    assert is_integer(b"1180591620717411303424") and is_integer(b"-0") and is_integer(b"7")
    assert not any(is_integer(x) for x in (b"1.0", b"1e3", b"01", b'"1"', b"true", b"-"))
