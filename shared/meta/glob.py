"""Go's path/filepath.Match (Unix), which filter_tools uses for its `pattern`.

    pattern:  { term }
    term:     '*'  any run of non-'/' characters      '?'  one non-'/' character
              '[' [ '^' ] { range } ']'  a class       '\\' c  the character c       c  itself
    range:    c  |  '\\' c  |  lo '-' hi

It works on UTF-8 bytes and decodes a character only where Go does (classes and '?'), so what matches in Go
matches here, quirks included: a star skips bytes, and a malformed pattern is an error even when the name ends
the match early, because Go checks the rest of the pattern before answering no.

That walk costs ~50 µs a name in Python, too much for filter_tools over hundreds of tools, so an ASCII name (where
bytes are characters and the byte quirks cannot arise) is matched by a regular expression compiled once per
pattern; the tests check the two agree.
"""

import re
from functools import lru_cache


class BadPattern(ValueError):
    def __init__(self) -> None:
        super().__init__("syntax error in pattern")


_SEPARATOR = ord("/")
_RUNE_ERROR = 0xFFFD


def match(pattern: str, name: str) -> bool:
    """Whether the whole of name matches pattern; BadPattern when the pattern is malformed."""
    if name.isascii():
        return _compiled(pattern).fullmatch(name) is not None
    return _match(pattern.encode(), name.encode())


def validate(pattern: str) -> None:
    """Raises BadPattern for a malformed pattern, as Go's Match(pattern, "") finds it."""
    _match(pattern.encode(), b"")


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    validate(pattern)  # a malformed pattern raises whatever the name, as in Go
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            i = _class(pattern, i + 1, out)
            continue
        else:
            if c == "\\":
                i += 1
                c = pattern[i]
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _class(pattern: str, i: int, out: list[str]) -> int:
    """Appends the class starting after '[' (already validated) and returns the index after its ']'."""
    negated = pattern[i] == "^"
    if negated:
        i += 1
    ranges: list[str] = []
    first = True
    while first or pattern[i] != "]":
        first = False
        lo, i = _class_char(pattern, i)
        hi = lo
        if pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
        if lo <= hi:  # Go's lo > hi range matches nothing
            ranges.append(f"\\U{ord(lo):08x}-\\U{ord(hi):08x}")
    if ranges:
        out.append(("[^" if negated else "[") + "".join(ranges) + "]")
    else:
        out.append("." if negated else "(?!)")
    return i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if pattern[i] == "\\":
        i += 1
    return pattern[i], i + 1


def _match(pattern: bytes, name: bytes) -> bool:
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            # A trailing star matches the rest unless the rest holds a separator.
            return _SEPARATOR not in name
        rest, ok = _match_chunk(chunk, name)
        # The last chunk must consume the whole name; otherwise the star may still find a later match.
        if ok and (not rest or pattern):
            name = rest
            continue
        if star:
            found = False
            i = 0
            while i < len(name) and name[i] != _SEPARATOR:
                rest, ok = _match_chunk(chunk, name[i + 1 :])
                if ok and not (not pattern and rest):
                    name = rest
                    found = True
                    break
                i += 1
            if found:
                continue
        # Before answering no, Go makes sure the rest of the pattern is well-formed.
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, b"")
        return False
    return not name


def _scan_chunk(pattern: bytes) -> tuple[bool, bytes, bytes]:
    star = False
    while pattern and pattern[0] == ord("*"):
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == ord("\\"):
            if i + 1 < len(pattern):  # a trailing backslash is reported by _match_chunk
                i += 1
        elif c == ord("["):
            in_range = True
        elif c == ord("]"):
            in_range = False
        elif c == ord("*") and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _match_chunk(chunk: bytes, s: bytes) -> tuple[bytes, bool]:
    # After a mismatch the loop goes on reading the chunk, only to find syntax errors in it.
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == ord("["):
            r = 0
            if not failed:
                r, n = _decode_rune(s)
                s = s[n:]
            chunk = chunk[1:]
            negated = bool(chunk) and chunk[0] == ord("^")
            if negated:
                chunk = chunk[1:]
            matched = False
            ranges = 0
            while True:
                if chunk and chunk[0] == ord("]") and ranges > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_escaped(chunk)
                hi = lo
                if chunk[0] == ord("-"):
                    hi, chunk = _get_escaped(chunk[1:])
                if lo <= r <= hi:
                    matched = True
                ranges += 1
            if matched == negated:
                failed = True
        elif c == ord("?"):
            if not failed:
                if s[0] == _SEPARATOR:
                    failed = True
                _, n = _decode_rune(s)
                s = s[n:]
            chunk = chunk[1:]
        else:
            if c == ord("\\"):
                chunk = chunk[1:]
                if not chunk:
                    raise BadPattern()
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    if failed:
        return b"", False
    return s, True


def _get_escaped(chunk: bytes) -> tuple[int, bytes]:
    if not chunk or chunk[0] in (ord("-"), ord("]")):
        raise BadPattern()
    if chunk[0] == ord("\\"):
        chunk = chunk[1:]
        if not chunk:
            raise BadPattern()
    r, n = _decode_rune(chunk)
    if r == _RUNE_ERROR and n == 1:
        raise BadPattern()
    chunk = chunk[n:]
    if not chunk:
        raise BadPattern()
    return r, chunk


def _decode_rune(s: bytes) -> tuple[int, int]:
    """utf8.DecodeRune: the first character and its width, or (RuneError, 1) for an invalid or cut sequence."""
    lead = s[0]
    if lead < 0x80:
        return lead, 1
    width = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
    if width == 0 or len(s) < width:
        return _RUNE_ERROR, 1
    try:
        return ord(s[:width].decode()), width
    except UnicodeDecodeError:
        return _RUNE_ERROR, 1
