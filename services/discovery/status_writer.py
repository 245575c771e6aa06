"""Writes each server's health into its MCPServer's status subresource: only on change, only as the leader.

Submissions coalesce per server (the newest wins), and a server's status is written at most once per
`min_interval`, so a server that flaps faster than that causes fewer writes, never more: never a write storm. A
write whose content equals the status already on the object is not made. Writes are PUTs carrying the
resourceVersion last seen: a conflict (someone changed the object) is retried on a fresh read, so a status never
overwrites a newer spec's generation. Leadership is checked right before every request.
"""

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes.aio import client

from services.discovery.kube import MCPSERVERS
from services.discovery.status import ServerStatus, render
from shared.lifecycle import woken

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name


class StatusConflict(Exception):
    """The object kept changing under every attempt; the status is submitted again later."""


class StatusWriter:
    def __init__(
        self,
        api: client.ApiClient,
        is_leader: Callable[[], bool],
        *,
        attempts: int = 5,
        retry_seconds: float = 1.0,
        min_interval: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.objects_api = client.CustomObjectsApi(api)
        self.is_leader = is_leader
        self.attempts = attempts
        self.retry_seconds = retry_seconds
        self.min_interval = min_interval
        self.clock = clock
        self.writes = 0  # status writes made, for metrics
        self._pending: dict[Key, ServerStatus] = {}
        self._known: dict[Key, dict[str, Any]] = {}  # the object as last read or written
        self._not_before: dict[Key, float] = {}  # monotonic: after a write, min_interval; after a failure, a retry
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, status: ServerStatus) -> None:
        self._pending[(status.namespace, status.name)] = status
        self._idle.clear()
        self._wake.set()

    def forget(self, namespace: str, name: str) -> None:
        """The server is gone: nothing more is written for it."""
        self._pending.pop((namespace, name), None)
        self._known.pop((namespace, name), None)
        self._not_before.pop((namespace, name), None)

    async def drained(self) -> None:
        """Returns once every submitted status is written, found unchanged, or dropped."""
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            wait = await self._write_due()
            if wait is None:
                self._idle.set()
            await woken(self._wake, wait)
            self._wake.clear()

    async def _write_due(self) -> float | None:
        """Writes the pending statuses that are due; how long until the next one is (None: nothing is pending)."""
        while self._pending:
            if not self.is_leader():
                self._pending.clear()
                self._known.clear()  # the next leader writes; when leading again, read afresh
                return None
            now = time.monotonic()
            key = min(self._pending, key=lambda k: self._not_before.get(k, -math.inf))
            due = self._not_before.get(key, -math.inf)
            if due > now:
                return due - now
            status = self._pending.pop(key)
            try:
                if await self.write(status):
                    self._not_before[key] = time.monotonic() + self.min_interval
            except (client.ApiException, StatusConflict, aiohttp.ClientError, OSError) as exc:
                logger.warning("status of MCPServer %s/%s not written: %s; trying again", *key, _brief(exc))
                self._pending.setdefault(key, status)
                self._not_before[key] = time.monotonic() + self.retry_seconds
        return None

    async def write(self, status: ServerStatus) -> bool:
        """Writes `status` unless the object already says the same; False when no write was needed or possible."""
        key = (status.namespace, status.name)
        obj = self._known.get(key) or await self._read(key)
        for _ in range(self.attempts):
            if obj is None:
                self.forget(*key)
                return False
            new = render(status, obj.get("status"), self.clock())
            if new == obj.get("status"):
                self._known[key] = obj
                return False
            if not self.is_leader():
                return False
            try:
                written: Any = await self.objects_api.replace_namespaced_custom_object_status(
                    MCPSERVERS[0],
                    MCPSERVERS[1],
                    key[0],
                    MCPSERVERS[2],
                    key[1],
                    {**obj, "status": new},
                    _request_timeout=10,
                )
            except client.ApiException as exc:
                if exc.status == 409:
                    obj = await self._read(key)
                    continue
                if exc.status == 404:
                    self.forget(*key)
                    return False
                raise
            self.writes += 1
            self._known[key] = written
            return True
        self._known.pop(key, None)
        raise StatusConflict(f"the object changed under {self.attempts} attempts")

    async def _read(self, key: Key) -> dict[str, Any] | None:
        try:
            obj: Any = await self.objects_api.get_namespaced_custom_object_status(
                MCPSERVERS[0], MCPSERVERS[1], key[0], MCPSERVERS[2], key[1], _request_timeout=10
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(obj)


def _brief(exc: Exception) -> str:
    if isinstance(exc, client.ApiException):
        return f"{exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__
