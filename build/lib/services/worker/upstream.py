"""Upstream sessions pooled per (server, credential), rebuilt when a server's address changes."""

import asyncio
import logging

from shared.http1 import Headers, Pool
from shared.messages import Call, ServerCatalog
from shared.upstream import UpstreamSession

logger = logging.getLogger(__name__)


class UnknownServer(Exception):
    pass


class Upstreams:
    def __init__(self) -> None:
        self.servers: dict[str, ServerCatalog] = {}
        self._pools: dict[str, Pool] = {}
        self._sessions: dict[tuple[str, bytes], UpstreamSession] = {}

    def configure(self, entry: ServerCatalog) -> None:
        old = self.servers.get(entry.name)
        self.servers[entry.name] = entry
        if old is not None and (old.url, old.headers) != (entry.url, entry.headers):
            self._drop(entry.name)

    def remove(self, name: str) -> None:
        self.servers.pop(name, None)
        self._drop(name)

    def _drop(self, name: str) -> None:
        pool = self._pools.pop(name, None)
        if pool is not None:
            pool.close()
        for key in [k for k in self._sessions if k[0] == name]:
            del self._sessions[key]

    def credential(self, call: Call) -> tuple[bytes, Headers]:
        """Which credential a call runs with, and the headers that carry it.

        Calls without upstream auth share one anonymous session per server. Per-user credentials plug in
        here; the key keeps one user's session (and token) from ever serving another.
        """
        return b"", []

    async def session(self, call: Call, deadline: float) -> UpstreamSession:
        name = call.server.decode()
        entry = self.servers.get(name)
        if entry is None:
            raise UnknownServer(f"server {name!r} is not configured")
        credential, auth_headers = self.credential(call)
        session = self._sessions.get((name, credential))
        if session is None:
            pool = self._pools.get(name)
            if pool is None:
                pool = self._pools[name] = Pool(entry.url, connect_timeout=min(entry.timeout, 10.0))
            static = [(k.encode(), v.encode()) for k, v in entry.headers.items()]
            session = self._sessions[(name, credential)] = UpstreamSession(pool, [*static, *auth_headers])
        await session.ensure_open(min(deadline, asyncio.get_running_loop().time() + entry.timeout))
        return session

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions if s.is_open), return_exceptions=True)
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
