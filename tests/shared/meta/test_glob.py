import json
import random
from pathlib import Path

import pytest

from shared.meta import glob

DATA = Path(__file__).resolve().parents[2] / "data"

# Go's own table for path/filepath.Match (src/path/filepath/match_test.go): pattern, name, match, bad pattern.
GO_MATCH_TESTS = [
    ("abc", "abc", True, False),
    ("*", "abc", True, False),
    ("*c", "abc", True, False),
    ("a*", "a", True, False),
    ("a*", "abc", True, False),
    ("a*", "ab/c", False, False),
    ("a*/b", "abc/b", True, False),
    ("a*/b", "a/c/b", False, False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True, False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True, False),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False, False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False, False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True, False),
    ("a*b?c*x", "abxbbxdbxebxczzy", False, False),
    ("ab[c]", "abc", True, False),
    ("ab[b-d]", "abc", True, False),
    ("ab[e-g]", "abc", False, False),
    ("ab[^c]", "abc", False, False),
    ("ab[^b-d]", "abc", False, False),
    ("ab[^e-g]", "abc", True, False),
    ("a\\*b", "a*b", True, False),
    ("a\\*b", "ab", False, False),
    ("a?b", "a☺b", True, False),
    ("a[^a]b", "a☺b", True, False),
    ("a???b", "a☺b", False, False),
    ("a[^a][^a][^a]b", "a☺b", False, False),
    ("[a-ζ]*", "α", True, False),
    ("*[a-ζ]", "A", False, False),
    ("a?b", "a/b", False, False),
    ("a*b", "a/b", False, False),
    ("[\\]a]", "]", True, False),
    ("[\\-]", "-", True, False),
    ("[x\\-]", "x", True, False),
    ("[x\\-]", "-", True, False),
    ("[x\\-]", "z", False, False),
    ("[\\-x]", "x", True, False),
    ("[\\-x]", "-", True, False),
    ("[\\-x]", "a", False, False),
    ("[]a]", "]", False, True),
    ("[-]", "-", False, True),
    ("[x-]", "x", False, True),
    ("[x-]", "-", False, True),
    ("[x-]", "z", False, True),
    ("[-x]", "x", False, True),
    ("[-x]", "-", False, True),
    ("[-x]", "a", False, True),
    ("\\", "a", False, True),
    ("[a-b-c]", "a", False, True),
    ("[", "a", False, True),
    ("[^", "a", False, True),
    ("[^bc", "a", False, True),
    ("a[", "a", False, True),
    ("a[", "ab", False, True),
    ("a[", "x", False, True),
    ("a/b[", "x", False, True),
    ("*x", "xxx", True, False),
]


def outcome(pattern: str, name: str) -> str:
    try:
        return "true" if glob.match(pattern, name) else "false"
    except glob.BadPattern:
        return "err"


@pytest.mark.parametrize(("pattern", "name", "matches", "bad"), GO_MATCH_TESTS)
def test_go_s_documented_cases_match_as_in_go(pattern: str, name: str, matches: bool, bad: bool) -> None:
    assert outcome(pattern, name) == ("err" if bad else str(matches).lower())


def test_seven_hundred_cases_answered_by_go_s_match_are_answered_the_same() -> None:
    # tests/data/glob_go.json: patterns and names (classes, escapes, multi-byte runes, separators, malformed
    # patterns), each with the answer of Go's filepath.Match as of Go 1.20+ (which also reports a malformed rest of
    # the pattern after a mismatch), recorded once with the Go toolchain.
    cases = json.loads((DATA / "glob_go.json").read_text())
    assert len(cases) == 700
    wrong = [(p, n, want, outcome(p, n)) for p, n, want in cases if outcome(p, n) != want]
    assert wrong == []


def test_a_star_skips_bytes_so_two_question_marks_can_match_the_tail_of_one_three_byte_rune() -> None:
    assert glob.match("*??", "€")
    assert not glob.match("??", "€")


def test_a_malformed_rest_of_the_pattern_is_an_error_even_after_a_mismatch() -> None:
    with pytest.raises(glob.BadPattern):
        glob.match("x*[", "y")
    with pytest.raises(glob.BadPattern):
        glob.validate("core_[")
    glob.validate("core_*")


def test_ascii_names_take_a_compiled_expression_that_answers_as_the_byte_walk() -> None:
    rng = random.Random(5)
    alphabet = [*"ab*?[]^-\\/_x", "é", "ζ"]
    for _ in range(8000):
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        name = "".join(rng.choice("ab-]/\\^_x*?[") for _ in range(rng.randint(0, 7)))
        try:
            compiled: object = glob._compiled(pattern).fullmatch(name) is not None
        except glob.BadPattern:
            compiled = "err"
        try:
            walked: object = glob._match(pattern.encode(), name.encode())
        except glob.BadPattern:
            walked = "err"
        assert compiled == walked, (pattern, name)
