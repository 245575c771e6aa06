"""The in-process caches of credentials: a value until its deadline, bounded in size, with one lock per key so
that concurrent callers in a process share one fetch (across processes, the Refresher's Valkey lock does that)."""

import asyncio
import time
from collections.abc import Hashable


class Expiring:
    """Values until a deadline, bounded in size (the oldest entry goes first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.entries: dict[Hashable, tuple[str, float]] = {}
        self.limit = limit
        self.locks: dict[Hashable, asyncio.Lock] = {}

    def get(self, key: Hashable) -> str | None:
        entry = self.entries.get(key)
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        return None

    def put(self, key: Hashable, value: str, seconds: float) -> None:
        if len(self.entries) >= self.limit:
            del self.entries[next(iter(self.entries))]
        self.entries[key] = (value, time.monotonic() + seconds)

    def lock(self, key: Hashable) -> asyncio.Lock:
        """One in-process flight per key; the cross-process one is the Refresher's."""
        lock = self.locks.get(key)
        if lock is None:
            if len(self.locks) >= self.limit:
                self.locks.clear()
            lock = self.locks[key] = asyncio.Lock()
        return lock
