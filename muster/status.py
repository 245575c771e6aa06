"""`muster status`: the whole pipeline at a glance, read from Valkey (nothing else is asked).

    servers        their state as discovery last saw it, and the size of what they offer
    queue          per server: depth (accepted, not yet answered: what the queue bound is checked against),
                   lag (not yet taken by any worker), running (taken by a worker, not yet answered), consumers
    in flight      calls the ingress replicas wait for (from their heartbeats)
    circuit        per server: the workers whose circuit breaker to it is open or half-open
    workers        alive (their heartbeats), outcomes they hold for Valkey, ingress replicas alive, the discovery
                   leader, dead letters

`--json` prints the same as one JSON object, for scripts.
"""

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from redis.asyncio import Redis

from shared import records, streams
from shared.valkey import connect


@dataclass
class ServerStatus:
    name: str
    state: str
    error: str | None
    tools: int
    resources: int
    prompts: int
    depth: int = 0
    length: int = 0
    lag: int | None = None  # Valkey cannot tell the lag after entries were deleted out of order
    running: int = 0
    consumers: int = 0
    circuits: dict[str, str] = field(default_factory=dict)  # worker -> its breaker's state, where not closed


@dataclass
class Replica:
    id: str
    pending: int


@dataclass
class Status:
    valkey: str
    leader: str | None
    workers: list[str] = field(default_factory=list)
    ingress: list[Replica] = field(default_factory=list)
    dead_letters: int = 0
    unsettled: int = 0  # outcomes of calls that ran, waiting in workers for Valkey to take them
    servers: list[ServerStatus] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        return sum(r.pending for r in self.ingress)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "in_flight": self.in_flight}


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | bytes | str) and value not in (b"", "") else 0


async def _alive(client: Redis, pattern: str) -> dict[str, bytes]:
    """The heartbeat keys matching `pattern`, by the id between its prefix and `:alive`, with their values."""
    prefix, suffix = pattern.split("*", 1)
    keys = sorted([k async for k in client.scan_iter(match=pattern, count=1000)])
    values = await client.mget(keys) if keys else []
    found: dict[str, bytes] = {}
    for key, value in zip(keys, values, strict=True):
        name = _text(key)
        if isinstance(value, bytes):  # None: expired between the two commands
            found[name[len(prefix) : len(name) - len(suffix)]] = value
    return found


def _field(value: bytes, name: str) -> int:
    """A count from a heartbeat's status (JSON); 0 when it has none."""
    try:
        return int(orjson.loads(value).get(name, 0))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0


def _workers_group(reply: Any) -> dict[str, Any]:
    if isinstance(reply, list):
        for group in reply:
            if isinstance(group, dict) and _text(group.get("name", b"")) == streams.GROUP_WORKERS:
                return group
    return {}


async def read(client: Redis, url: str) -> Status:
    loaded = await records.load(client)
    names = sorted(loaded)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(streams.depth(name))
        pipe.xlen(streams.calls(name))
        pipe.xinfo_groups(streams.calls(name))
        pipe.hgetall(streams.circuits(name))
    pipe.xlen(streams.DEAD_LETTER)
    pipe.get(streams.DISCOVERY_LEADER)
    replies: list[Any] = await pipe.execute(raise_on_error=False)
    status = Status(
        valkey=without_password(url),
        leader=_text(replies[-1]) if isinstance(replies[-1], bytes) else None,
        dead_letters=_int(replies[-2]) if not isinstance(replies[-2], Exception) else 0,
    )
    for i, name in enumerate(names):
        record = loaded[name]
        assert record is not None
        depth, length, groups, circuits = replies[4 * i : 4 * i + 4]
        group = _workers_group(groups)
        lag = group.get("lag")
        status.servers.append(
            ServerStatus(
                name=name,
                state=record.state,
                error=record.error,
                tools=len(record.tools),
                resources=len(record.resources),
                prompts=len(record.prompts),
                depth=max(_int(depth), 0) if not isinstance(depth, Exception) else 0,
                length=length if isinstance(length, int) else 0,
                lag=int(lag) if lag is not None else None,
                running=int(group.get("pending", 0)),
                consumers=int(group.get("consumers", 0)),
                circuits={_text(k): _text(v) for k, v in circuits.items()} if isinstance(circuits, dict) else {},
            )
        )
    workers = await _alive(client, streams.WORKERS_ALIVE)
    status.workers = sorted(workers)
    status.unsettled = sum(_field(value, "unsettled") for value in workers.values())
    for replica, value in sorted((await _alive(client, streams.INGRESS_ALIVE)).items()):
        status.ingress.append(Replica(replica, _field(value, "pending")))
    return status


def render(status: Status) -> str:
    """The status as a person reads it in a terminal: a summary line, then one row per server."""
    lines = [
        f"muster on {status.valkey}",
        f"  discovery leader  {status.leader or '-- none --'}",
        f"  ingress replicas  {len(status.ingress)}   calls in flight {status.in_flight}",
        f"  workers alive     {len(status.workers)}   outcomes waiting for valkey {status.unsettled}",
        f"  dead letters      {status.dead_letters}",
        "",
    ]
    header = ("SERVER", "STATE", "TOOLS", "DEPTH", "LAG", "RUNNING", "WORKERS", "CIRCUIT", "ERROR")
    rows = [
        (
            s.name,
            s.state,
            str(s.tools),
            str(s.depth),
            "?" if s.lag is None else str(s.lag),
            str(s.running),
            str(s.consumers),
            _circuit(s.circuits),
            (s.error or "")[:60],
        )
        for s in status.servers
    ]
    if not rows:
        return "\n".join([*lines, "no servers in the catalog"])
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _circuit(circuits: dict[str, str]) -> str:
    """How many workers hold the server's circuit open or half-open; "closed" when none does."""
    if not circuits:
        return "closed"
    states = sorted(set(circuits.values()))
    return ", ".join(f"{state} on {sum(1 for v in circuits.values() if v == state)}" for state in states)


async def status(url: str, seconds: float = 5.0) -> Status:
    client = connect(url, name="muster-status")
    try:
        async with asyncio.timeout(seconds):
            return await read(client, url)
    finally:
        await client.aclose()
