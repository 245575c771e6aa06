"""Every Valkey key, stream and group name muster uses. No other module spells one out.

Streams (all bounded with MAXLEN ~):
    calls:<server>      ingress -> workers, one per upstream server, consumer group GROUP_WORKERS
    replies:<replica>   workers -> the ingress replica that holds the caller's HTTP request
    inbox:<worker>      ingress -> the worker running a call (answers to server->client requests)
    capabilities        discovery -> every ingress replica and worker (catalog changed)
    control             ingress -> every worker, ingress replica and discovery (cancellations, ended sessions,
                        changed subscriptions)
    dead                calls that failed on too many workers in a row (the dead-letter stream)

Keys: catalog (hash server -> entry), session:<id> (hash), depth:<server> (queue bound counter),
worker:<id>:alive (heartbeat), started:<server>:<entry> (a non-idempotent call was sent), subs:... (who listens
to which resource), discovery:leader (lease).
"""

from typing import Final

PREFIX: Final = "muster:"

GROUP_WORKERS: Final = "workers"

CAPABILITIES: Final = PREFIX + "capabilities"
CONTROL: Final = PREFIX + "control"
DEAD_LETTER: Final = PREFIX + "dead"
CATALOG: Final = PREFIX + "catalog"
DISCOVERY_LEADER: Final = PREFIX + "discovery:leader"

# Lengths that bound each stream; entries beyond them are trimmed approximately.
CALLS_MAXLEN: Final = 100_000
REPLIES_MAXLEN: Final = 20_000
EVENTS_MAXLEN: Final = 1_000


def calls(server: str) -> str:
    return f"{PREFIX}calls:{server}"


def depth(server: str) -> str:
    """Counter of accepted, not yet acknowledged calls for one server: the queue bound is checked against it."""
    return f"{PREFIX}depth:{server}"


def replies(replica: str) -> str:
    return f"{PREFIX}replies:{replica}"


def inbox(worker: str) -> str:
    return f"{PREFIX}inbox:{worker}"


def session(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def worker_alive(worker: str) -> str:
    return f"{PREFIX}worker:{worker}:alive"


def started(server: str, entry_id: str) -> str:
    """Marks a call that was sent upstream, so that a redelivery knows it may already have run."""
    return f"{PREFIX}started:{server}:{entry_id}"


def subscribers(server: str, uri: str) -> str:
    """The sessions subscribed to one resource of one server."""
    return f"{PREFIX}subs:{server}:{uri}"


def subscribed(server: str) -> str:
    """The resource URIs of one server that have (or recently had) subscribers."""
    return f"{PREFIX}subscribed:{server}"


def session_subscriptions(session_id: str) -> str:
    """What one session subscribed to, as "server\\nuri" entries, for cleaning up when it ends."""
    return f"{PREFIX}session:{session_id}:subs"
