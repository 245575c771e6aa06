"""Who is alive: this worker's own heartbeat, and the judgement of other workers and ingress replicas by theirs.

A process is dead when its heartbeat counter has not advanced while the observer's own counter advanced by the
beats of `dead_after` seconds - never because a key expired, and never by the observer's own clock. A Valkey
outage or freeze expires every key at once and stops every counter at once, the observer's too: nobody is
judged meanwhile, so no live worker takes over another's running calls after an outage, and an observer that
was itself paused or cut off judges nobody on what it missed.

The heartbeat is written by a thread with its own connection, not by the event loop: a loop blocked for a
while (a huge result being parsed, a long garbage collection) must not look like a dead worker, whose calls
would then run twice. A loop stalled for `stall` seconds does stop the heartbeat, since its calls will not
finish either.
"""

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
import redis.sentinel
from redis.exceptions import RedisError

from shared import sentinel, streams

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)
def _replica_key(replica: bytes) -> bytes:
    return streams.replica_beat(replica.decode()).encode()


def _client(url: str, name: str, timeout: float) -> redis.Redis:
    """A blocking client for the heartbeat's thread; with a Sentinel URL, of the primary the Sentinels name (asked
    again on each new connection, so that the heartbeat follows a failover)."""
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "client_name": name}
    address = sentinel.parse(url)
    if not address.is_sentinel:
        return redis.Redis.from_url(url, **options)
    credentials = {"username": address.username, "password": address.password}
    group = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        address.sentinels,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **(credentials if address.sentinel_auth else {}),
        },
        db=address.db,
        ssl=address.tls,
        **credentials,
    )
    client: redis.Redis = group.master_for(address.primary_name, **options)  # type: ignore[no-untyped-call]
    return client


class Heartbeat:
    """Advances `muster:worker:<id>:beat` every `interval` seconds from a thread, while the event loop ticks;
    with it, writes what `status()` says into `muster:worker:<id>:alive` for `muster status` (expiring)."""

    def __init__(
        self,
        url: str,
        worker_id: str,
        *,
        interval: float,
        timeout: float,
        stall: float,
        status: Callable[[], bytes] | None = None,
    ) -> None:
        self.url = url
        self.name = f"muster-worker-{worker_id}-beat"
        self.key = streams.worker_beat(worker_id)
        self.alive = streams.worker_alive(worker_id)
        self.status = status
        self.interval = interval
        self.timeout = timeout
        self.stall = stall
        self.tick = time.monotonic()  # the event loop's last sign of life
        self.beats = 0
        self.failing = False  # the last beat did not reach Valkey (or the loop stalled)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ticked(self) -> None:
        """Called from the event loop: it is not stuck."""
        self.tick = time.monotonic()

    def start(self) -> None:
        if self._thread is not None:  # started already (a start that failed later on is tried again)
            return
        self._thread = threading.Thread(target=self._run, name="muster-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 2 * self.timeout)

    def _run(self) -> None:
        client = _client(self.url, self.name, self.timeout)
        try:
            while True:
                if time.monotonic() - self.tick <= self.stall:
                    self._beat(client)
                elif not self.failing:
                    self.failing = True
                    logger.error("the event loop has not run for %.0f s: heartbeat stopped", self.stall)
                if self._stop.wait(self.interval):
                    return
        finally:
            client.close()

    def _beat(self, client: redis.Redis) -> None:
        try:
            pipe = client.pipeline(transaction=False)
            pipe.incr(self.key)
            pipe.expire(self.key, streams.BEAT_TTL)
            if self.status is not None:
                pipe.set(self.alive, self.status(), px=int(self.interval * streams.ALIVE_BEATS * 1000))
            pipe.execute()
        except (RedisError, OSError) as exc:
            if not self.failing:
                logger.warning("heartbeat failed: %s", exc)
            self.failing = True
            return
        if self.failing:
            logger.info("heartbeat written again")
        self.failing = False
        self.beats += 1


class Liveness:
    """Judges processes by their heartbeat counters against this worker's own, read together by `observe`.

    The clock is this worker's own counter: it advances only while this worker's heartbeat reaches Valkey. A
    counter that stood still while the own one advanced `beats` times belongs to a dead process; while Valkey is
    down, frozen or unreachable from here, the own counter stands still too, and nobody is judged.
    """

    def __init__(self, own: bytes, beats: int, replica_beats: int) -> None:
        self.own = own  # this worker's beat key
        self.beats = beats
        self.replica_beats = replica_beats  # more: a replica judged dead loses its callers' replies
        self.clock: int | None = None  # the own counter at the last observation
        self._seen: dict[bytes, tuple[bytes | None, int]] = {}  # beat key -> (value, own counter when first seen)
        self.replicas: set[bytes] = set()  # the ingress replicas there are (streams.REPLICAS)

    @classmethod
    def of(cls, worker_id: str, *, heartbeat: float, dead_after: float, replica_dead_after: float) -> "Liveness":
        return cls(
            streams.worker_beat(worker_id).encode(),
            max(2, math.ceil(dead_after / heartbeat)),
            max(2, math.ceil(replica_dead_after / heartbeat)),
        )

    def watch_replicas(self, replicas: set[bytes]) -> None:
        for gone in self.replicas - replicas:
            self.forget_replica(gone)
        self.replicas = replicas

    def watched(self) -> list[bytes]:
        """The beat keys to read: this worker's own, and those of the replicas."""
        return [self.own, *(_replica_key(replica) for replica in self.replicas)]

    def observe(self, beats: Mapping[bytes, bytes | None]) -> None:
        """Values of beat keys read from Valkey at one moment (one MGET), this worker's own among them."""
        own = beats.get(self.own)
        clock = int(own) if own is not None else None
        if clock is None or (self.clock is not None and clock < self.clock):  # no own beat, or Valkey lost it
            self._seen.clear()
        self.clock = clock
        if clock is None:
            return
        seen = self._seen
        for key, value in beats.items():
            known = seen.get(key)
            if known is None or known[0] != value:
                seen[key] = (value, clock)

    def lost_contact(self) -> None:
        self._seen.clear()
        self.clock = None

    def dead(self, key: bytes, beats: int | None = None) -> bool:
        """Whether the counter at `key` stood still while the own one advanced `beats` times, or its process
        said it stopped."""
        known = self._seen.get(key)
        if known is None or self.clock is None:
            return False
        return known[0] == streams.BEAT_STOPPED or self.clock - known[1] >= (self.beats if beats is None else beats)

    def expired(self, key: bytes) -> bool:
        """Whether the counter at `key` was last seen gone from Valkey (its TTL ran out, long after its process)."""
        known = self._seen.get(key)
        return known is not None and known[0] is None

    def replica_gone(self, replica: bytes) -> bool:
        return self.dead(_replica_key(replica), self.replica_beats)

    def gone_replicas(self) -> list[bytes]:
        return [replica for replica in self.replicas if self.replica_gone(replica)]

    def replica_expired(self, replica: bytes) -> bool:
        return self.expired(_replica_key(replica))

    def forget_replica(self, replica: bytes) -> None:
        self.replicas.discard(replica)
        self._seen.pop(_replica_key(replica), None)
