"""The Kubernetes source: MCPServer resources in one namespace or all, as discovery's desired servers.

List, then watch from the list's resourceVersion with bookmarks; a watch that ends is resumed from the newest
version seen (an event's or a bookmark's), so nothing is missed and nothing is seen twice. 410 Gone means the
API server no longer has the history to resume from: list again and report the difference to what was known.
Failures back off (bounded, with jitter) and never end the source. Until the first list succeeds the source
reports nothing at all; after it, every update is complete, so no consumer ever removes a server it merely had
not heard of yet.
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import aiohttp
from kubernetes.aio import client, watch

from services.discovery.kube import MCPSERVERS
from services.discovery.source import Desired, Update, diff, settle
from shared.mcpserver import InvalidResource, MCPServer, parse

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name
TRANSIENT = (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError)


@dataclass
class Backoff:
    first: float = 0.2
    cap: float = 30.0
    failures: int = 0

    async def wait(self) -> None:
        delay = min(self.cap, self.first * 2**self.failures)
        self.failures = min(self.failures + 1, 30)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def reset(self) -> None:
        self.failures = 0


Parsed = MCPServer | InvalidResource


def desired_from(objects: dict[Key, dict[str, Any]], cache: dict[Key, tuple[str, Parsed]]) -> Desired:
    """Parses every resource (each version once: `cache` keeps the last); an invalid one is refused with its name
    and the field, and a name taken twice (in two namespaces) keeps the first namespace's resource."""
    servers: dict[str, MCPServer] = {}
    errors: dict[str, str] = {}
    for key in [k for k in cache if k not in objects]:
        del cache[key]
    for key, obj in sorted(objects.items()):
        where = f"{key[0]}/{key[1]}"
        version = str((obj.get("metadata") or {}).get("resourceVersion"))
        cached = cache.get(key)
        if cached is None or cached[0] != version:
            try:
                cached = cache[key] = (version, parse(obj))
            except InvalidResource as exc:
                cached = cache[key] = (version, exc)
        parsed = cached[1]
        if isinstance(parsed, InvalidResource):
            errors[where] = f"{where}: {parsed}"
        elif parsed.name in servers:
            first = servers[parsed.name].metadata.namespace
            errors[where] = f"{where}: MCPServer {parsed.name} is also defined in namespace {first}, which is used"
        else:
            servers[parsed.name] = parsed
    return Desired(MappingProxyType(servers), MappingProxyType(errors))


class MCPServerWatch:
    """The `Source` (services/discovery/source.py) of MCPServer resources, on the official asyncio client."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str | None,
        *,
        watch_timeout_seconds: int = 240,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        self.objects_api = client.CustomObjectsApi(api)
        self.namespace = namespace or None
        self.watch_timeout = watch_timeout_seconds
        self.backoff = Backoff(cap=backoff_max_seconds)
        self.synced = asyncio.Event()  # set once the first complete list is in: what /readyz can report

    def _list_call(self) -> Any:
        if self.namespace is None:
            return self.objects_api.list_cluster_custom_object, MCPSERVERS
        return self.objects_api.list_namespaced_custom_object, (*MCPSERVERS[:2], self.namespace, MCPSERVERS[2])

    async def _list(self) -> tuple[dict[Key, dict[str, Any]], str]:
        call, args = self._list_call()
        listing: Any = await call(*args, _request_timeout=30)
        items = {_key(o): o for o in listing.get("items") or []}
        return items, str(listing["metadata"]["resourceVersion"])

    async def updates(self) -> AsyncIterator[Update]:
        mirror = _Mirror()
        while True:
            try:
                if mirror.version is None:
                    objects, version = await self._list()
                    self.backoff.reset()
                    update = mirror.replace(objects, version)
                    self.synced.set()
                    if update is not None:
                        yield update
                opened = asyncio.get_running_loop().time()
                async for update in self._follow(mirror):
                    yield update
                if asyncio.get_running_loop().time() - opened > 1.0:
                    continue  # the watch ended on its timeout: resume at once
                logger.warning("kubernetes: the MCPServer watch from version %s ended at once", mirror.version)
            except client.ApiException as exc:
                if exc.status == 410:
                    logger.info("kubernetes: MCPServer watch expired at version %s; listing again", mirror.version)
                    mirror.version = None
                    continue
                logger.warning("kubernetes: MCPServer %s failed: %s %s", _doing(mirror.version), exc.status, exc.reason)
            except TRANSIENT as exc:
                logger.warning("kubernetes: MCPServer %s failed: %s", _doing(mirror.version), exc or type(exc).__name__)
            except Exception:
                # The client raises bare exceptions for malformed events; the source outlives them all.
                logger.exception("kubernetes: MCPServer %s failed unexpectedly", _doing(mirror.version))
            await self.backoff.wait()

    async def _follow(self, mirror: "_Mirror") -> AsyncIterator[Update]:
        """The updates one watch from the mirror's version brings; every event moves that version on."""
        assert mirror.version is not None, "a watch starts from a list's version"
        async for event_type, obj in self._watch(mirror.version):
            update = mirror.apply(event_type, obj)
            if update is not None:
                yield update

    async def _watch(self, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        call, args = self._list_call()
        w = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            async for event in w.stream(  # type: ignore[no-untyped-call]
                call,
                *args,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _request_timeout=self.watch_timeout + 30,
            ):
                if not isinstance(event, dict) or not isinstance(event.get("raw_object"), dict):
                    raise ValueError(f"unreadable watch event: {str(event)[:200]}")
                self.backoff.reset()
                yield event["type"], event["raw_object"]
        finally:
            if w.resp is not None:
                w.resp.close()  # a release would hand the unfinished stream back to the pool; close ends the watch
            await w.close()  # type: ignore[no-untyped-call]


class _Mirror:
    """The MCPServer resources as the list and the watch events since have shown them, and what was reported."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.cache: dict[Key, tuple[str, Parsed]] = {}
        self.last: Desired | None = None  # reported last; None before the first list
        self.version: str | None = None  # to watch from; None: list (again) before watching

    def replace(self, objects: dict[Key, dict[str, Any]], version: str) -> Update | None:
        self.objects, self.version = objects, version
        return self._report()

    def apply(self, event_type: str, obj: dict[str, Any]) -> Update | None:
        self.version = obj["metadata"]["resourceVersion"]
        if event_type == "BOOKMARK":
            return None
        if event_type == "DELETED":
            self.objects.pop(_key(obj), None)
        else:
            self.objects[_key(obj)] = obj
        return self._report()

    def _report(self) -> Update | None:
        update, self.last = _update(self.last, desired_from(self.objects, self.cache))
        return update


def resource(where: str) -> Key:
    """The namespace and name of a refused resource, from its key in `Desired.errors` (see desired_from)."""
    namespace, _, name = where.partition("/")
    return namespace, name


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def _doing(version: str | None) -> str:
    return "list" if version is None else f"watch from version {version}"


def _update(last: Desired | None, new: Desired) -> tuple[Update | None, Desired]:
    """The update to report for the new state, if any: the first state always, later ones when something changed."""
    current = settle(last or Desired(), new)
    changes = diff(last or Desired(), current)
    if last is not None and not changes:
        return None, last
    for problem in (current.errors[c.name] for c in changes if c.kind == "refused"):
        logger.error("%s", problem)
    return Update(current, changes), current
