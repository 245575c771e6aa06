import json

import pytest

from shared.meta._gojson import format_float, format_g, format_v, lower, marshal, marshal_indent, quote


def test_marshal_indent_writes_what_go_s_marshal_indent_writes() -> None:
    value = {"tools": [{"name": "a", "score": 1.0}], "empty": [], "none": {}, "flag": False, "nil": None}
    assert marshal_indent(value) == (
        '{\n  "tools": [\n    {\n      "name": "a",\n      "score": 1\n    }\n  ],\n'
        '  "empty": [],\n  "none": {},\n  "flag": false,\n  "nil": null\n}'
    )


def test_html_characters_and_line_separators_are_escaped_as_go_does() -> None:
    assert marshal({"d": "a<b>&c\u2028\u2029"}) == '{"d":"a\\u003cb\\u003e\\u0026c\\u2028\\u2029"}'
    assert json.loads(marshal({"d": "<&>"})) == {"d": "<&>"}


def test_non_ascii_text_is_written_as_utf8_and_control_characters_escaped() -> None:
    assert marshal("é☺\n\t\x01") == '"é☺\\n\\t\\u0001"'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.0001, "0.0001"),
        (12.8424, "12.8424"),
        (1e-7, "1e-7"),
        (1.5e-5, "0.000015"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (-0.0, "-0"),
    ],
)
def test_floats_take_go_s_shortest_form(value: float, text: str) -> None:
    assert format_float(value) == text


def test_fmt_v_of_json_values_reads_as_go_prints_them() -> None:
    assert [format_g(x) for x in (1.0, 123456.0, 1e6, 1e-5, 0.0001, 2.5)] == [
        "1",
        "123456",
        "1e+06",
        "1e-05",
        "0.0001",
        "2.5",
    ]
    assert format_v({"b": [1, True], "a": None}) == "map[a:<nil> b:[1 true]]"
    assert format_v("text") == "text"


def test_quote_is_go_s_percent_q() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    assert quote("é\n\x00\u00a0") == '"é\\n\\x00\\u00a0"'


def test_lower_maps_each_rune_to_one_rune_as_go_does() -> None:
    assert lower("İSTANBUL ΣΑΣ") == "istanbul σασ"
