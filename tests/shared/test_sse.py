"""The server-sent events decoder: properties over any split of a stream into reads, any line endings, comments
and multi-line data; and its bound on one event."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared._sse import EventTooLarge, SSEDecoder

LIMIT = 1 << 20
line_text = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
ending = st.sampled_from([b"\n", b"\r", b"\r\n"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes], bytes | None, int | None]:
    """A valid event stream with any line endings; what it should decode to: events, last id, retry."""
    wire: list[bytes] = []
    expected: list[bytes] = []
    last_id: bytes | None = None
    retry: int | None = None

    def line(text: bytes) -> None:
        end = draw(ending)
        if not text and end == b"\n" and wire and wire[-1].endswith(b"\r"):
            end = b"\r\n"  # CR then a bare LF is one CRLF: the stream would mean something else
        wire.append(text + end)

    for _ in range(draw(st.integers(0, 6))):
        data_lines = draw(st.lists(line_text, max_size=4))
        fields: list[bytes] = [b"data: " + value if value or draw(st.booleans()) else b"data" for value in data_lines]
        for _ in range(draw(st.integers(0, 2))):
            fields.insert(draw(st.integers(0, len(fields))), b":" + draw(line_text))  # a comment
        if draw(st.booleans()):
            fields.insert(0, b"event: " + draw(st.sampled_from([b"message", b"ping"])))
        event_id = draw(st.none() | line_text.map(lambda b: b.replace(b"\0", b"")))
        if event_id is not None:
            fields.append(b"id: " + event_id)
            last_id = event_id
        if draw(st.integers(0, 4)) == 0:
            retry = draw(st.integers(0, 10**6))
            fields.append(b"retry: %d" % retry)
        for field in fields:
            line(field)
        line(b"")  # the end of the event
        if any(data_lines):
            expected.append(b"\n".join(data_lines))
    return b"".join(wire), expected, last_id, retry


def decode(pieces: list[bytes], limit: int = LIMIT) -> tuple[list[bytes], SSEDecoder]:
    events: list[bytes] = []
    decoder = SSEDecoder(events.append, limit)
    for piece in pieces:
        decoder.feed(piece)
    return events, decoder


def split(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in itertools.pairwise(points) if a < b]


@settings(max_examples=400, deadline=2000)
@given(stream=streams(), cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30))
def test_any_split_of_a_valid_stream_yields_its_events(
    stream: tuple[bytes, list[bytes], bytes | None, int | None], cuts: list[int]
) -> None:
    wire, expected, last_id, retry = stream
    whole, _ = decode([wire])
    events, decoder = decode(split(wire, cuts))
    assert events == whole == expected
    assert decoder.count == len(expected) and decoder.last_id == last_id and decoder.retry == retry


@settings(max_examples=150, deadline=2000)
@given(stream=streams())
def test_byte_by_byte_reads_yield_the_same_events(stream: tuple[bytes, list[bytes], bytes | None, int | None]) -> None:
    wire, expected, _, _ = stream
    events, _ = decode([wire[n : n + 1] for n in range(len(wire))])
    assert events == expected


def test_a_crlf_split_between_reads_ends_one_line_not_two() -> None:
    events, _ = decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert events == [b"a\nb"]


def test_decoding_stops_when_on_event_says_so() -> None:
    seen: list[bytes] = []

    def on_event(data: bytes) -> bool:
        seen.append(data)
        return data == b"2"

    decoder = SSEDecoder(on_event, LIMIT)
    decoder.feed(b"data: 1\n\ndata: 2\n\ndata: 3\n\n")
    assert seen == [b"1", b"2"] and decoder.done


def test_an_id_with_nul_and_a_retry_that_is_not_a_number_are_ignored() -> None:
    _, decoder = decode([b"id: 1\nretry: 5\ndata: x\n\nid: a\0b\nretry: 7s\ndata: y\n\n"])
    assert decoder.last_id == b"1" and decoder.retry == 5


def test_an_event_with_only_empty_data_primes_the_stream_without_being_passed_on() -> None:
    events, decoder = decode([b"id: 7\ndata:\n\n"])
    assert events == [] and decoder.last_id == b"7"


@pytest.mark.parametrize("pieces", [[b"data: " + b"x" * 2000], [b"data: ", b"x" * 1000, b"x" * 1000],
                                    [b"data: xxxxxxxxxx\n" * 300]])  # fmt: skip
def test_an_event_past_the_limit_fails_whether_one_line_or_many(pieces: list[bytes]) -> None:
    with pytest.raises(EventTooLarge, match="1024 bytes"):
        decode(pieces, limit=1024)


def test_the_limit_is_per_event_not_per_stream() -> None:
    events, _ = decode([b"data: " + b"x" * 900 + b"\n\n"] * 50, limit=1024)
    assert len(events) == 50
