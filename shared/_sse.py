"""An incremental server-sent events decoder (the WHATWG event-stream format), linear in the bytes fed.

A read never re-joins what came before it: a line still in progress is kept as a list of pieces and joined once,
when its end arrives. So one 32 MiB event arriving in 64 KiB reads costs one pass over its bytes, where
re-joining the buffer on every read cost seconds of a blocked event loop. The event in progress (its data lines and
its unfinished line) is bounded by `limit`.
"""

from collections.abc import Callable

OnEvent = Callable[[bytes], bool | None]  # True: that was the last event wanted; stop decoding


class EventTooLarge(Exception):
    """One event grew past the decoder's limit before it ended."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an event exceeds {limit} bytes")
        self.limit = limit


class SSEDecoder:
    """Feed it a stream's bytes in any pieces; it calls `on_event` with each event's data, lines joined by LF.

    Lines may end in CRLF, LF or CR, also split across reads. Comments, `event:` and unknown fields are skipped;
    `id:` (without NUL) and `retry:` (digits) are kept for resuming the stream. An event whose data lines are all
    empty is not passed on: it only primes the stream for resumption.
    """

    __slots__ = ("_cr", "_data", "_data_size", "_id", "_partial", "_partial_size", "count", "done", "last_id",
                 "limit", "on_event", "retry")  # fmt: skip

    def __init__(self, on_event: OnEvent, limit: int) -> None:
        self.on_event = on_event
        self.limit = limit
        self.count = 0  # events passed on
        self.done = False  # on_event asked to stop
        self.last_id: bytes | None = None
        self.retry: int | None = None
        self._partial: list[bytes] = []  # the pieces of a line whose end has not arrived
        self._partial_size = 0
        self._data: list[bytes] = []  # the data lines of the event in progress
        self._data_size = 0
        self._id: bytes | None = None  # the last event id buffer; it becomes last_id when an event ends
        self._cr = False  # the last piece ended in CR: an LF that starts the next one ends no second line

    def feed(self, chunk: bytes) -> None:
        data = self._data
        for line in self._lines(chunk):
            if line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
                data.append(value)
                self._data_size += len(value) + 1
            elif not line:  # the end of an event
                if self._end_event():
                    return
                data = self._data
            elif line[0] != 58 and not line.startswith(b"event:"):  # 58 is ":", a comment
                self._field(line)
        if self._partial_size + self._data_size > self.limit:
            raise EventTooLarge(self.limit)

    def _lines(self, chunk: bytes) -> list[bytes]:
        """The lines the chunk ends, the first joined to the pieces before it; an unfinished last line is kept."""
        if self._cr:
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")  # one piece, not a copy, when the chunk holds no line end
        rest = lines.pop()
        if lines and self._partial:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial, self._partial_size = [], 0
        if rest:
            self._partial.append(rest)
            self._partial_size += len(rest)
        return lines

    def _end_event(self) -> bool:
        """Passes the event in progress on, if it has data; True when on_event wants no more."""
        self.last_id = self._id
        data = self._data
        if not data:
            return False
        self._data, self._data_size = [], 0
        if not any(data):
            return False
        self.count += 1
        if self.on_event(b"\n".join(data)):
            self.done = True
            return True
        return False

    def _field(self, line: bytes) -> None:
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":  # a bare "data" line: an empty data line
            self._data.append(value)
            self._data_size += 1
        elif name == b"id":
            if b"\0" not in value:
                self._id = value
        elif name == b"retry" and value.isdigit():
            self.retry = int(value)
