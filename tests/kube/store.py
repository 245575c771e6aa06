"""The state of the test API server: objects, one resourceVersion counter, and the event history watches replay.

It follows the API server's rules where a client can tell the difference: a resourceVersion per write and none
for a no-op write, optimistic concurrency (409) on a stale resourceVersion, `metadata.generation` bumped on a
change outside metadata and status only, the status subresource (the main resource ignores status, /status
ignores everything else), and 410 Gone for a watch that resumes from before the oldest kept event.
"""

import copy
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Object = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    status: bool = False  # has the status subresource
    generation: bool = False  # keeps metadata.generation

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS = {
    k.plural: k
    for k in (
        Kind("muster.giantswarm.io", "v1alpha1", "mcpservers", "MCPServer", status=True, generation=True),
        Kind("coordination.k8s.io", "v1", "leases", "Lease"),
        Kind("", "v1", "secrets", "Secret"),
    )
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> Object:
        return status_object(self.code, self.reason, self.message)


def status_object(code: int, reason: str, message: str) -> Object:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass(frozen=True)
class Event:
    rv: int
    type: str
    kind: Kind
    namespace: str
    object: Object


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(obj: Object) -> Object:
    """What `metadata.generation` follows: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


@dataclass
class Store:
    rv: int = 1
    floor: int = 0  # a watch may resume from this resourceVersion or later; older ones are Gone
    objects: dict[tuple[str, str, str], Object] = field(default_factory=dict)
    history: deque[Event] = field(default_factory=lambda: deque(maxlen=10_000))
    listeners: list[Callable[[Event], None]] = field(default_factory=list)

    def _key(self, kind: Kind, namespace: str, name: str) -> tuple[str, str, str]:
        return (kind.plural, namespace, name)

    def _current(self, kind: Kind, namespace: str, name: str) -> Object:
        obj = self.objects.get(self._key(kind, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{kind.resource} "{name}" not found')
        return obj

    def _commit(self, type_: str, kind: Kind, namespace: str, obj: Object) -> Object:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = self._key(kind, namespace, obj["metadata"]["name"])
        if type_ == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        event = Event(self.rv, type_, kind, namespace, copy.deepcopy(obj))
        self.history.append(event)
        if self.history and self.history[0].rv - 1 > self.floor:
            self.floor = self.history[0].rv - 1  # the bounded history forgot what came before
        for listener in list(self.listeners):
            listener(event)
        return copy.deepcopy(obj)

    def listing(self, kind: Kind, namespace: str | None) -> tuple[list[Object], str]:
        items = [
            copy.deepcopy(obj)
            for (plural, ns, _), obj in sorted(self.objects.items())
            if plural == kind.plural and namespace in (None, ns)
        ]
        return items, str(self.rv)

    def get(self, kind: Kind, namespace: str, name: str) -> Object:
        return copy.deepcopy(self._current(kind, namespace, name))

    def create(self, kind: Kind, namespace: str, body: Object) -> Object:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{kind.kind}.{kind.group} is invalid: metadata.name: Required value")
        if self._key(kind, namespace, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{kind.resource} "{name}" already exists')
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
        meta.pop("resourceVersion", None)
        if kind.generation:
            meta["generation"] = 1
        if kind.status:
            obj.pop("status", None)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        return self._commit("ADDED", kind, namespace, obj)

    def _precondition(self, kind: Kind, current: Object, body: Object, *, required: bool) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        name = current["metadata"]["name"]
        if wanted is None:
            if required:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{kind.kind} "{name}" is invalid: metadata.resourceVersion: must be specified for an update',
                )
            return
        if wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )

    def update(self, kind: Kind, namespace: str, name: str, body: Object, subresource: str | None) -> Object:
        current = self._current(kind, namespace, name)
        self._precondition(kind, current, body, required=True)
        return self._write(kind, namespace, current, body, subresource)

    def patch(
        self, kind: Kind, namespace: str, name: str, patched: Callable[[Object], Object], subresource: str | None
    ) -> Object:
        current = self._current(kind, namespace, name)
        body = patched(copy.deepcopy(current))
        if not isinstance(body, dict):
            raise ApiError(422, "Invalid", "the patch does not yield an object")
        if (body.get("metadata") or {}).get("resourceVersion") != current["metadata"]["resourceVersion"]:
            self._precondition(kind, current, body, required=False)
        return self._write(kind, namespace, current, body, subresource)

    def _write(self, kind: Kind, namespace: str, current: Object, body: Object, subresource: str | None) -> Object:
        name = current["metadata"]["name"]
        if (body.get("metadata") or {}).get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(body.get("status"))
            if new["status"] is None:
                del new["status"]
        else:
            new = copy.deepcopy(body)
            meta = new.setdefault("metadata", {})
            for immutable in ("name", "namespace", "uid", "creationTimestamp", "generation"):
                if immutable in current["metadata"]:
                    meta[immutable] = current["metadata"][immutable]
            if kind.status:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
            new["apiVersion"], new["kind"] = kind.api_version, kind.kind
            if kind.generation and _body(new) != _body(current):
                meta["generation"] = current["metadata"]["generation"] + 1
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            return copy.deepcopy(current)  # a no-op write makes no new resourceVersion and no event
        return self._commit("MODIFIED", kind, namespace, new)

    def delete(self, kind: Kind, namespace: str, name: str) -> Object:
        current = self._current(kind, namespace, name)
        return self._commit("DELETED", kind, namespace, copy.deepcopy(current))

    def since(self, rv: int, kind: Kind, namespace: str | None) -> list[Event]:
        """The events after `rv`, or 410 Gone when the history no longer reaches back that far."""
        if rv < self.floor:
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.floor + 1})")
        return [e for e in self.history if e.rv > rv and e.kind == kind and namespace in (None, e.namespace)]

    def compact(self) -> None:
        """Forgets every event so far, as etcd compaction does: resuming from an older version is Gone."""
        self.history.clear()
        self.floor = self.rv
