"""One server's queue, in and out: ENQUEUE admits a call within the queue's bound and the caller's fair share,
FINISH lets it go exactly once. Both are scripts on keys of the server's hash tag (streams.QueueKeys).

Fairness: each principal (the signed-in user; without sign-in, the agent session) has at most `fair_share`
calls in the server's main stream, counting those a worker runs. Beyond that, its calls wait in its own overflow
stream, and each of its calls that finishes promotes its next one. A quiet principal's call therefore enters
the main stream at once and waits behind at most (busy principals x fair_share) others, never behind a flood.
A promoted call gets a new entry id; everything a worker needs (deadline, safety) is in its fields.

FINISH is idempotent: only the XACK that acknowledged the entry (it returns 1 once) moves the counters, so a
FINISH retried after a lost reply, or raced by a worker that took the call over, cannot make them drift. It also
deletes the entry, so an answered call's payload leaves Valkey with its acknowledgement.

Cost per call, measured by `python -m bench.scripts` (its numbers are in docs/benchmarks).
"""

from collections.abc import Callable

from shared import streams
from shared.messages import ANONYMOUS, Call
from shared.resp import ConnectionClosed
from shared.valkey import AtWrite, Outbox

# KEYS: calls stream, depth counter, shares hash, the principal's overflow stream.
# ARGV: bound, maxlen, fair share, principal, accepted until (ms, Valkey's clock; 0: any time), then the entry's
# field/value pairs. Returns the entry id (in the main stream or the overflow), false when the queue is full, 0
# when it came too late.
ENQUEUE = b"""
if ARGV[5] ~= '0' then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[5]) then return 0 end
end
local depth = redis.call('INCR', KEYS[2])
if depth > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[2])
  return false
end
if redis.call('HINCRBY', KEYS[3], ARGV[4], 1) > tonumber(ARGV[3]) then
  redis.call('HINCRBY', KEYS[3], ARGV[4], -1)
  return redis.call('XADD', KEYS[4], '*', unpack(ARGV, 6))
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 6))
"""

# KEYS: calls stream, depth counter, shares hash, the principal's overflow stream, the call's started marker.
# ARGV: group, entry id, principal ("" for an entry that names none), maxlen.
# Returns 0 when the entry was acknowledged before (nothing moves), else 1 + the number of calls promoted.
FINISH = b"""
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('DECR', KEYS[2])
redis.call('DEL', KEYS[5])
if ARGV[3] == '' then return 1 end
local waiting = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)
if #waiting == 0 then
  if redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[3]) end
  return 1
end
redis.call('XDEL', KEYS[4], waiting[1][1])
if redis.call('XLEN', KEYS[4]) == 0 then redis.call('DEL', KEYS[4]) end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(waiting[1][2]))
return 2
"""


class Late(ConnectionClosed):
    """Valkey ran the ENQUEUE after its caller had stopped waiting for it (a frozen or stalled Valkey runs what
    it had received when it wakes up), so it refused it: the call is not queued, and the caller was right to be
    told so."""


def principal_of(call: Call) -> bytes:
    """Whose share of the server's queue a call counts against: the signed-in principal; without sign-in the
    agent session; a per-request (2026-07-28) client without sign-in has neither, and such clients share one
    share between them (muster cannot tell them apart, and giving each call its own share would let them
    starve everybody else)."""
    if call.principal != ANONYMOUS:
        return call.principal
    return call.session or ANONYMOUS


async def enqueue(
    outbox: Outbox, call: Call, *, bound: int, fair_share: int, until: Callable[[], int] | None = None
) -> bytes | None:
    """Admits a call to its server's queue: its entry id, or None when the queue holds `bound` calls. `until`, if
    given, says (when the script is written to Valkey) until when in Valkey's clock, in ms since the epoch, it
    may run; run later, the call is refused with Late."""
    queue = streams.queue(call.server.decode())
    principal = principal_of(call)
    keys = (queue.stream, queue.depth, queue.shares, queue.overflow(principal))
    deadline = 0 if until is None else AtWrite(until)
    entry: bytes | int | None = await outbox.script(
        ENQUEUE, keys, (bound, streams.CALLS_MAXLEN, fair_share, principal, deadline, *call.fields())
    )
    if isinstance(entry, int):
        raise Late("valkey ran the call's ENQUEUE after this replica stopped waiting for it; it was not queued")
    return entry


async def finish(outbox: Outbox, queue: streams.QueueKeys, entry_id: bytes, call: Call | None) -> int:
    """Lets a call go: acknowledged, deleted, uncounted, its started marker removed, its principal's next call
    promoted. 0 if it was let go before. `call` None: an entry that names no call (malformed): only acknowledged,
    deleted and uncounted."""
    principal = b"" if call is None else principal_of(call)
    keys = (queue.stream, queue.depth, queue.shares, queue.overflow(principal), queue.started(entry_id))
    done: int = await outbox.script(FINISH, keys, (streams.GROUP_WORKERS, entry_id, principal, streams.CALLS_MAXLEN))
    return done
