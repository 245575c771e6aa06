"""Tapes: what one of muster's own event streams sends, kept in Valkey for a bounded time, so that a client whose
stream dropped resumes it through any replica (Last-Event-ID; SEP-1699 on muster's side), and so that a call
waiting for a 2026-07-28 client's input goes on wherever the client sends the input.

    muster:tape:<id>   entry 0-1: who may read it (its meta); 0-2, 0-3, ...: one entry per event, in order

An event's id names its tape and its place: `<kind><tape>.<seq>`, kind `p` (a POST response), `g` (a GET stream),
`i` (a call waiting for input). The writer appends without waiting: the Outbox sends it with the other writes of
the loop's turn, so a streamed event costs one pipelined XADD and no round trip. A reader follows the tape with a
blocking XREAD from where its client left off. A tape is bounded in entries (streams.TAPE_MAXLEN) and in time: it
lives while its call may still produce events, then `keep` seconds more for a client to come back.
"""

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared import streams
from shared.follow import Follow
from shared.valkey import Outbox

_POSITION = re.compile(rb"([pgi])([0-9a-f]{24})\.([0-9]{1,9})")
META = 1  # the seq of the meta entry; events start after it
Fields = Mapping[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client is on a tape: the last event it has."""

    kind: bytes
    tape: str
    seq: int

    @classmethod
    def parse(cls, value: bytes | None) -> "Position | None":
        """The position an event id names; None for anything that is not one of muster's event ids."""
        match = _POSITION.fullmatch(value or b"")
        if match is None:
            return None
        return cls(match.group(1), match.group(2).decode(), int(match.group(3)))


class Tape:
    """A tape being written, by the replica that serves the stream or holds the call."""

    def __init__(self, outbox: Outbox, kind: bytes, tape_id: str) -> None:
        self.outbox = outbox
        self.kind = kind
        self.id = tape_id
        self.key = streams.tape(tape_id).encode()
        self.seq = META

    def event_id(self, seq: int) -> bytes:
        return self.kind + self.id.encode() + b".%d" % seq

    def append(self, fields: list[bytes]) -> int:
        """Keeps one more event; returns its place."""
        self.seq += 1
        self.outbox.post(b"XADD", self.key, b"MAXLEN", b"~", streams.TAPE_MAXLEN, b"0-%d" % self.seq, *fields)
        return self.seq

    def expire(self, seconds: float) -> None:
        self.outbox.post(b"EXPIRE", self.key, max(1, round(seconds)))


class Tapes:
    def __init__(self, client: Redis, outbox: Outbox, *, keep: float, block_ms: int) -> None:
        self.client = client
        self.outbox = outbox
        self.keep = keep  # seconds a finished tape stays readable
        self.block_ms = block_ms

    def open(self, kind: bytes, meta: dict[bytes, bytes], lifetime: float) -> Tape:
        """A new tape, readable by whoever `meta` names, for `lifetime` seconds unless it is expired sooner."""
        tape = Tape(self.outbox, kind, secrets.token_hex(12))
        fields = [x for pair in meta.items() for x in pair]
        self.outbox.post(b"XADD", tape.key, b"MAXLEN", b"~", streams.TAPE_MAXLEN, b"0-%d" % META, *fields)
        tape.expire(lifetime)
        return tape

    def finish(self, tape: Tape) -> None:
        """Nothing more will be written: the tape stays for a client that comes back within `keep` seconds."""
        tape.expire(self.keep)

    async def meta(self, tape_id: str) -> dict[bytes, bytes] | None:
        found: Any = await self.client.xrange(streams.tape(tape_id), b"0-%d" % META, b"0-%d" % META)
        return dict(found[0][1]) if found else None

    async def entries(self, tape_id: str, first: int, last: int) -> list[tuple[int, dict[bytes, bytes]]]:
        """The entries between two places, both included, as (seq, fields)."""
        found: Any = await self.client.xrange(streams.tape(tape_id), b"0-%d" % first, b"0-%d" % last)
        return [(int(entry_id.split(b"-")[1]), dict(fields)) for entry_id, fields in found]

    async def exists(self, tape_id: str) -> bool:
        return bool(await self.client.exists(streams.tape(tape_id)))

    def follow(self, tape_id: str, after: int) -> Follow:
        """The entries after a place, as they are written; an empty batch every block_ms while none come."""
        return Follow(self.client, [streams.tape(tape_id)], since=b"0-%d" % after, count=100, block_ms=self.block_ms)


def seq_of(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[1])
