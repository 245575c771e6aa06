"""muster's own event streams: each event of a session's stream carries an id and is kept on a tape, so that a
client whose connection dropped sends a GET with Last-Event-ID to any replica and gets what it missed, once.

A POST response that streams (the upstream notified or asked before answering) starts with a priming event
(an id, no data, and how long to wait before resuming: SEP-1699), then every event goes to the tape and to the
client; the replica keeps writing the tape after the client is gone, until the call's outcome. A resume replays
the tape after the client's last id and follows it to the outcome. A GET stream's events are kept the same way;
resuming one replays what the dropped stream sent after the client's last id, then goes on as a new GET stream.
A per-request (2026-07-28) client has no session to resume in: its streams carry no ids and keep no tape.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from services.ingress.http import Exchange
from services.ingress.tapes import META, Position, Tape, Tapes, seq_of

RETRY_MS = 500  # what a client whose stream dropped is asked to wait before resuming it


class EventStream:
    """One event-stream response, its events on a tape when it has one."""

    def __init__(self, exchange: Exchange, tapes: Tapes, tape: Tape | None) -> None:
        self.exchange = exchange
        self.tapes = tapes
        self.tape = tape

    @classmethod
    async def open(
        cls,
        exchange: Exchange,
        tapes: Tapes,
        kind: bytes,
        session: bytes | None,
        lifetime: float,
        *,
        started: bool = False,
    ) -> "EventStream":
        """Starts the response (unless it has `started`); with a session, on a tape only that session may resume."""
        if not started:
            await exchange.start_events()
        if not session:
            return cls(exchange, tapes, None)
        tape = tapes.open(kind, {b"session": session}, lifetime)
        await exchange.prime(tape.event_id(META), RETRY_MS)
        return cls(exchange, tapes, tape)

    async def send(self, data: bytes) -> None:
        if self.tape is None:
            await self.exchange.event(data)
            return
        seq = self.tape.append([b"data", data])
        await self.exchange.event(data, event_id=self.tape.event_id(seq))

    async def end(self, data: bytes) -> None:
        """The last event, then the end of the response."""
        if self.tape is None:
            await self.exchange.event(data, more=False)
            return
        seq = self.tape.append([b"data", data, b"end", b"1"])
        self.tapes.finish(self.tape)
        await self.exchange.event(data, more=False, event_id=self.tape.event_id(seq))

    def close(self) -> None:
        """The stream ends without a last event (a GET stream): its tape stays for a while, for a resume."""
        if self.tape is not None:
            self.tapes.finish(self.tape)


async def next_or_gone(iterator: AsyncIterator[Any], gone: "asyncio.Future[Any]") -> Any:
    """The iterator's next item, or `gone` if it completes first (the client went away)."""
    step: asyncio.Future[Any] = asyncio.ensure_future(anext(iterator))
    await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not step.done():
        step.cancel()
        return gone
    return step.result()


async def replay(exchange: Exchange, tapes: Tapes, at: Position, gone: "asyncio.Future[Any]") -> None:
    """Resumes a dropped POST stream: its events after `at`, as they come, to its last one. The response has
    started; it ends with the stream's last event, or when the tape is gone (expired, or its replica stopped)."""
    follow = aiter(tapes.follow(at.tape, at.seq))
    kind = at.kind + at.tape.encode()
    while True:
        batch = await next_or_gone(follow, gone)
        if batch is gone:
            return
        if not batch:
            if not await tapes.exists(at.tape):
                await exchange.end_events()
                return
            await exchange.keepalive()
            continue
        for _, entries in batch:
            for entry_id, fields in entries:
                last = fields.get(b"end") == b"1"
                event_id = kind + b".%d" % seq_of(entry_id)
                await exchange.event(fields[b"data"], more=not last, event_id=event_id)
                if last:
                    return


async def missed(exchange: Exchange, tapes: Tapes, at: Position) -> None:
    """What a dropped GET stream sent after `at`, sent again with its own ids, before the stream goes on."""
    kind = at.kind + at.tape.encode()
    for seq, fields in await tapes.entries(at.tape, at.seq + 1, 1 << 30):
        await exchange.event(fields[b"data"], event_id=kind + b".%d" % seq)
