"""A Kubernetes API server for tests: enough of the real protocol that the official client runs against it
unchanged, for MCPServers (muster.giantswarm.io/v1alpha1, with the status subresource), Leases and Secrets.

    python -m tests.kube.apiserver --port N

Verbs: list (one namespace or all), watch (newline-delimited events, ADDED/MODIFIED/DELETED/BOOKMARK/ERROR,
`resourceVersion`, `allowWatchBookmarks`, `timeoutSeconds`), get, create, update (PUT), patch (merge and JSON
patch), delete, and the same on `/status`. State is in tests/kube/store.py.

A side channel under /_fake/ injects faults and reports what clients did:
    POST   /_fake/faults  {"cut_watches": true, "partial": true}  cut every open watch now (mid-event if partial)
                          {"watch_gone": n} / {"watch_gone_http": n}  answer the next n watches with 410 Gone,
                                                                    as an ERROR event / as an HTTP 410
                          {"compact": true}  forget the event history: resuming from before now is Gone
                          {"bookmark_seconds": s}  how often open watches get a BOOKMARK
                          {"rules": [{"verb": "update", "match": "/leases/", "status": 503, "delay": 2.0,
                                      "count": 1}]}  slow or failing answers for matching requests
    DELETE /_fake/faults  clears the rules and the pending 410s
    GET    /_fake/stats   {"requests": {"<verb> <path>": count}, "watches": open watches, "rv": newest version}
    DELETE /_fake/stats   resets the request counts
    POST   /_fake/reset   forgets every object, count and fault: a fresh server for the next test
"""

import argparse
import asyncio
import contextlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn

from tests.kube.patches import PatchError, json_patch, merge_patch
from tests.kube.store import KINDS, ApiError, Event, Kind, Object, Store, status_object

Scope = dict[str, Any]


class CutWatch(Exception):
    """Raised inside a watch response: uvicorn then closes the connection without ending the chunked body."""


@dataclass
class Rule:
    verb: str | None = None
    match: str | None = None
    status: int | None = None
    delay: float | None = None
    count: int | None = None  # None: every matching request

    def matches(self, verb: str, path: str) -> bool:
        return self.verb in (None, verb) and (self.match is None or self.match in path) and self.count != 0


@dataclass
class OpenWatch:
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    partial: bool = False


@dataclass
class Route:
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class ApiServer:
    store: Store = field(default_factory=Store)
    requests: Counter[str] = field(default_factory=Counter)
    rules: list[Rule] = field(default_factory=list)
    watch_gone: int = 0
    watch_gone_http: int = 0
    bookmark_seconds: float = 5.0
    watches: list[OpenWatch] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if path.startswith("/_fake/"):
            await self.side_channel(send, method, path, body)
            return
        try:
            route = _route(path)
            verb = _verb(method, route, query)
            self.requests[f"{verb} {path}"] += 1
            await self.faults_for(verb, path)
            if verb == "watch":
                await self.watch(receive, send, route, query)
                return
            code, answer = self.dispatch(verb, route, body, headers.get("content-type", ""))
        except ApiError as exc:
            code, answer = exc.code, exc.status()
        await respond(send, code, answer)

    async def faults_for(self, verb: str, path: str) -> None:
        for rule in self.rules:
            if rule.matches(verb, path):
                if rule.count is not None:
                    rule.count -= 1
                if rule.delay:
                    await asyncio.sleep(rule.delay)
                if rule.status:
                    raise ApiError(rule.status, "InternalError", f"injected fault for {verb} {path}")
                return

    def dispatch(self, verb: str, route: Route, body: bytes, content_type: str) -> tuple[int, Object]:
        kind, ns, name, sub = route.kind, route.namespace, route.name, route.subresource
        if verb == "list":
            items, rv = self.store.listing(kind, ns)
            return 200, {
                "apiVersion": kind.api_version,
                "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        if ns is None:
            raise ApiError(405, "MethodNotAllowed", f"{verb} needs a namespace")
        if verb == "create":
            return 201, self.store.create(kind, ns, _json(body))
        assert name is not None
        if verb == "get":
            return 200, self.store.get(kind, ns, name)
        if verb == "delete":
            deleted = self.store.delete(kind, ns, name)
            details = {"name": name, "group": kind.group, "kind": kind.plural, "uid": deleted["metadata"]["uid"]}
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        if verb == "update":
            return 200, self.store.update(kind, ns, name, _json(body), sub)
        if verb == "patch":
            patch = _json(body)
            media = content_type.split(";")[0].strip()
            if media == "application/merge-patch+json":
                return 200, self.store.patch(kind, ns, name, lambda obj: merge_patch(obj, patch), sub)
            if media == "application/json-patch+json":
                try:
                    return 200, self.store.patch(kind, ns, name, lambda obj: json_patch(obj, patch), sub)
                except PatchError as exc:
                    raise ApiError(422, "Invalid", str(exc)) from exc
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {media}")
        raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported")

    async def watch(self, receive: Any, send: Any, route: Route, query: dict[str, str]) -> None:
        kind, ns = route.kind, route.namespace
        if self.watch_gone_http > 0:
            self.watch_gone_http -= 1
            raise ApiError(410, "Expired", "injected: the resource version is too old")
        queue: asyncio.Queue[Event] = asyncio.Queue()

        def listener(event: Event) -> None:
            if event.kind == kind and ns in (None, event.namespace):
                queue.put_nowait(event)

        # The listener is in place before the backlog is read, with no await between: no event falls in a gap.
        self.store.listeners.append(listener)
        rv = query.get("resourceVersion", "")
        error: Object | None = None
        backlog: list[Event] = []
        if self.watch_gone > 0:
            self.watch_gone -= 1
            error = status_object(410, "Expired", f"too old resource version: {rv} (injected)")
        elif rv in ("", "0"):
            items, _ = self.store.listing(kind, ns)
            backlog = [Event(int(o["metadata"]["resourceVersion"]), "ADDED", kind, "", o) for o in items]
        else:
            try:
                backlog = self.store.since(int(rv), kind, ns)
            except ApiError as exc:
                error = exc.status()
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(query["timeoutSeconds"]) if "timeoutSeconds" in query else None
        handle = OpenWatch()
        self.watches.append(handle)
        gone = asyncio.ensure_future(receive())  # the only thing left to receive is the client's disconnect
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            if error is not None:
                await _line(send, {"type": "ERROR", "object": error})
                return
            sent = int(rv) if rv.isdigit() else 0
            for event in backlog:
                sent = max(sent, event.rv)
                await _line(send, {"type": event.type, "object": event.object})
            while True:
                wait = self.bookmark_seconds if bookmarks else 3600.0
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        return
                next_event = asyncio.ensure_future(queue.get())
                cut = asyncio.ensure_future(handle.cut.wait())
                done, _ = await asyncio.wait({next_event, cut, gone}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for future in (next_event, cut):
                    if not future.done():
                        future.cancel()
                if gone.done():
                    return
                if handle.cut.is_set():
                    if handle.partial:
                        await send(
                            {
                                "type": "http.response.body",
                                "body": b'{"type":"MODIFIED","object":{"apiVer',
                                "more_body": True,
                            }
                        )
                    raise CutWatch()
                if next_event in done:
                    event = next_event.result()
                    if event.rv > sent:
                        sent = event.rv
                        await _line(send, {"type": event.type, "object": event.object})
                elif bookmarks and (deadline is None or loop.time() < deadline):
                    marker = {
                        "apiVersion": kind.api_version,
                        "kind": kind.kind,
                        "metadata": {"resourceVersion": str(self.store.rv)},
                    }
                    await _line(send, {"type": "BOOKMARK", "object": marker})
        finally:
            gone.cancel()
            self.watches.remove(handle)
            self.store.listeners.remove(listener)
            with contextlib.suppress(Exception):
                if not handle.cut.is_set():
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def side_channel(self, send: Any, method: str, path: str, body: bytes) -> None:
        if path == "/_fake/faults" and method == "POST":
            spec = json.loads(body or b"{}")
            if spec.get("cut_watches"):
                for handle in self.watches:
                    handle.partial = bool(spec.get("partial"))
                    handle.cut.set()
            self.watch_gone += int(spec.get("watch_gone", 0))
            self.watch_gone_http += int(spec.get("watch_gone_http", 0))
            if spec.get("compact"):
                self.store.compact()
            if "bookmark_seconds" in spec:
                self.bookmark_seconds = float(spec["bookmark_seconds"])
            self.rules.extend(Rule(**r) for r in spec.get("rules", []))
            await respond(send, 200, {"watches": len(self.watches)})
        elif path == "/_fake/reset" and method == "POST":
            for handle in self.watches:
                handle.cut.set()
            self.store, self.requests, self.rules = Store(), Counter(), []
            self.watch_gone = self.watch_gone_http = 0
            self.bookmark_seconds = 5.0
            await respond(send, 200, {})
        elif path == "/_fake/faults" and method == "DELETE":
            self.rules, self.watch_gone, self.watch_gone_http = [], 0, 0
            await respond(send, 200, {})
        elif path == "/_fake/stats" and method == "GET":
            await respond(
                send, 200, {"requests": dict(self.requests), "watches": len(self.watches), "rv": self.store.rv}
            )
        elif path == "/_fake/stats" and method == "DELETE":
            self.requests.clear()
            await respond(send, 200, {})
        else:
            await respond(send, 404, status_object(404, "NotFound", f"no side channel at {method} {path}"))


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the body is not JSON: {exc}") from exc


def _route(path: str) -> Route:
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource {path}")
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    kind = KINDS.get(rest[0])
    if kind is None or (kind.group, kind.version) != (group, version) or len(rest) > 3:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource {path}")
    subresource = rest[2] if len(rest) == 3 else None
    if subresource is not None and (subresource != "status" or not kind.status):
        raise ApiError(404, "NotFound", f"the server could not find the requested resource {path}")
    return Route(kind, namespace, rest[1] if len(rest) >= 2 else None, subresource)


def _verb(method: str, route: Route, query: dict[str, str]) -> str:
    if method == "GET":
        if route.name is not None:
            return "get"
        return "watch" if query.get("watch") in ("true", "1") else "list"
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    if method not in verbs or (route.name is None) != (method == "POST"):
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")
    return verbs[method]


async def _line(send: Any, event: Object) -> None:
    await send({"type": "http.response.body", "body": json.dumps(event).encode() + b"\n", "more_body": True})


async def respond(send: Any, code: int, body: Object) -> None:
    await send({"type": "http.response.start", "status": code, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


class _QuietCuts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], CutWatch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.getLogger("uvicorn.error").addFilter(_QuietCuts())
    uvicorn.run(
        ApiServer(),
        host="127.0.0.1",
        port=args.port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
