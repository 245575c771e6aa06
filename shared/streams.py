"""Every Valkey key, stream and group name muster uses, and every bound on them. No other module spells one out.

The keys one upstream server's queue touches together carry the server as a hash tag, so that a Valkey Cluster
can shard by server, and no script or transaction on the per-call path spans two servers' keys:

    muster:{<server>}:calls            stream  ingress -> workers, consumer group GROUP_WORKERS (CALLS_MAXLEN)
    muster:{<server>}:depth            counter accepted, unacknowledged calls: the queue bound is checked on it
    muster:{<server>}:started:<entry>  string  a call that is not safe to run twice was sent (STARTED_TTL)
    muster:{<server>}:subscribed       set     resource URIs that have (or recently had) subscribers
    muster:{<server>}:subs:<uri>       set     the sessions subscribed to one resource
    muster:{<server>}:inflight:<agent> hash    calls of one agent session running on a per-agent upstream session:
                                               call key -> "replica call_id" (where the upstream's requests go)
    muster:{<server>}:listen:<agent>   string  the worker holding the GET stream of that upstream session (a lease)

One key family per ingress replica, worker or session:

    muster:replies:<replica>   stream  workers and discovery -> one ingress replica (REPLIES_MAXLEN, REPLIES_TTL)
    muster:inbox:<worker>      stream  ingress -> the worker running a call: answers to its relayed requests
    muster:session:<id>        hash    one MCP session (protocol, capabilities, principal, level, stream holder)
    muster:session:<id>:subs   set     what the session subscribed to, as "server\\nuri" (SUBSCRIPTIONS_MAX)
    muster:session:<id>:asked  set     refs of the requests relayed to the session and not answered yet
    muster:tape:<id>           stream  what one of muster's own event streams sent (TAPE_MAXLEN), or what a call
                                       waiting for a 2026-07-28 client's input produced: any replica resumes it
    muster:session:<id>:upstreams  hash  server -> the session's own upstream session there (a binding:
                                       "upstream session id\\nprotocol\\nprincipal"); lives BINDING_GRACE longer
                                       than the session, so that its upstream sessions are closed after it expires
    muster:worker:<id>:alive   string  the worker's heartbeat
    muster:ingress:<id>:alive  string  an ingress replica's heartbeat (ALIVE_BEATS): `muster status` counts them

And the keys everybody shares:

    muster:servers             hash    server name -> ServerRecord: discovery writes, ingress and workers read
    muster:sessions            zset    session id -> when it expires (unix seconds): the bound on their count
    muster:capabilities        stream  discovery -> ingress replicas and workers: these records changed
    muster:control             stream  ingress -> everybody: CancelCall, SessionEnded, SubscriptionsChanged
    muster:dead                stream  calls that failed on too many workers in a row (the dead-letter stream)
    muster:discovery:leader    string  the lease of the active discovery
    muster:log-hash-key        string  the key of the principal's hash in log lines, when none is configured
    muster:upstream-expiry     zset    agent sessions with upstream sessions, scored by when to look at them
                                       again (their expiry): the janitor closes the upstream sessions of those gone
"""

import functools
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "muster:"

GROUP_WORKERS: Final = "workers"

SERVERS: Final = PREFIX + "servers"
CAPABILITIES: Final = PREFIX + "capabilities"
CONTROL: Final = PREFIX + "control"
DEAD_LETTER: Final = PREFIX + "dead"
DISCOVERY_LEADER: Final = PREFIX + "discovery:leader"
SESSIONS: Final = PREFIX + "sessions"
LOG_HASH_KEY: Final = PREFIX + "log-hash-key"
UPSTREAM_EXPIRY: Final = PREFIX + "upstream-expiry"

# Lengths that bound each stream; entries beyond them are trimmed approximately (MAXLEN ~).
CALLS_MAXLEN: Final = 100_000
REPLIES_MAXLEN: Final = 20_000
INBOX_MAXLEN: Final = 10_000
EVENTS_MAXLEN: Final = 1_000  # capabilities, control
DEAD_LETTER_MAXLEN: Final = 10_000
TAPE_MAXLEN: Final = 1_000  # events of one muster event stream kept for resuming it
SUBSCRIPTIONS_MAX: Final = 100  # resources one session subscribes to at once

# Lifetimes, in seconds.
REPLIES_TTL: Final = 3600  # a reply stream lives this long after the last reply any writer sent to it
REPLIES_TTL_RENEW: Final = 60  # how often one writer renews a reply stream's lifetime
STARTED_TTL: Final = 24 * 3600  # longer than any call's deadline
ALIVE_BEATS: Final = 3  # heartbeats an ingress replica may miss before it no longer counts as alive
BINDING_GRACE: Final = 600  # how much longer an agent session's bindings live than the session itself
IN_FLIGHT_TTL: Final = 24 * 3600  # an in-flight record whose worker died is gone after this, or when its call ends


def _server(server: str) -> str:
    return f"{PREFIX}{{{server}}}:"


def calls(server: str) -> str:
    return _server(server) + "calls"


def depth(server: str) -> str:
    """Counter of accepted, not yet acknowledged calls for one server: the queue bound is checked against it."""
    return _server(server) + "depth"


def started(server: str, entry_id: str) -> str:
    """Marks a call that was sent upstream, so that a redelivery knows it may already have run."""
    return _server(server) + "started:" + entry_id


def subscribed(server: str) -> str:
    """The resource URIs of one server that have (or recently had) subscribers."""
    return _server(server) + "subscribed"


def subscribers(server: str, uri: str) -> str:
    """The sessions subscribed to one resource of one server."""
    return _server(server) + "subs:" + uri


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one server's queue, as the bytes the per-call path sends."""

    server: str
    stream: bytes
    depth: bytes

    def started(self, entry_id: bytes) -> bytes:
        return started(self.server, entry_id.decode()).encode()


@functools.lru_cache(maxsize=4096)
def queue(server: str) -> QueueKeys:
    """The keys of one server's queue, built once per server rather than once per call."""
    return QueueKeys(server, calls(server).encode(), depth(server).encode())


def replies(replica: str) -> str:
    return f"{PREFIX}replies:{replica}"


def inbox(worker: str) -> str:
    return f"{PREFIX}inbox:{worker}"


def session(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def session_subscriptions(session_id: str) -> str:
    """What one session subscribed to, as "server\\nuri" entries, for cleaning up when it ends."""
    return f"{PREFIX}session:{session_id}:subs"


def session_asked(session_id: str) -> str:
    """The refs of server->client requests relayed to one session that it may still answer."""
    return f"{PREFIX}session:{session_id}:asked"


def tape(tape_id: str) -> str:
    """What one of muster's event streams sent, or a call waiting for input produced, for resuming it anywhere."""
    return f"{PREFIX}tape:{tape_id}"


def upstream_sessions(session_id: str) -> str:
    """The bindings of one agent session: server -> its own upstream session at that server."""
    return f"{PREFIX}session:{session_id}:upstreams"


def in_flight(server: str, session_id: str) -> str:
    """The calls of one agent session that run on its own upstream session at one server."""
    return _server(server) + "inflight:" + session_id


def listener(server: str, session_id: str) -> str:
    """The lease of the worker that holds the GET stream of one agent session's upstream session."""
    return _server(server) + "listen:" + session_id


def worker_alive(worker: str) -> str:
    return f"{PREFIX}worker:{worker}:alive"


WORKERS_ALIVE: Final = PREFIX + "worker:*:alive"  # a SCAN pattern over the workers' heartbeats


def ingress_alive(replica: str) -> str:
    return f"{PREFIX}ingress:{replica}:alive"


INGRESS_ALIVE: Final = PREFIX + "ingress:*:alive"  # a SCAN pattern over the ingress replicas' heartbeats
