"""From a client request to the upstream call it becomes: which server, which upstream name, which params.

Everything that only needs checking, not executing, is checked here, so that a bad request is answered
without a trip through the queue.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from shared import errors
from shared.catalog import Catalog, FamilyRoute
from shared.meta.errors import RouteError


class BadRequest(Exception):
    """Answered as a JSON-RPC error with this code and message, with this HTTP status."""

    def __init__(self, code: int, message: str, data: Any = None, *, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status


@dataclass(frozen=True, slots=True)
class Target:
    server: str
    params: bytes  # as the upstream must receive them
    safe: bool
    name: str = ""  # the upstream's name of the tool or prompt called; "" for other methods


def _string(params: dict[str, Any], key: str, method: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(errors.INVALID_PARAMS, f"Invalid params: {method} requires params.{key}, a non-empty string")
    return value


def _object(params: dict[str, Any], key: str) -> None:
    value = params.get(key)
    if value is not None and not isinstance(value, dict):
        raise BadRequest(errors.INVALID_PARAMS, f"Invalid params: params.{key} must be an object")


def _unknown(catalog: Catalog, kind: str, name: str) -> str:
    # With one server whose names pass unchanged, the server decides about names muster does not know.
    if catalog.sole is not None:
        return catalog.sole.name
    raise BadRequest(errors.INVALID_PARAMS, f"Unknown {kind}: {name}")


def route(catalog: Catalog, method: str, params: Any) -> Target:
    if not isinstance(params, dict):
        raise BadRequest(errors.INVALID_PARAMS, f"Invalid params: {method} requires params, an object")
    if method in ("tools/call", "prompts/get"):
        name = _string(params, "name", method)
        _object(params, "arguments")
        kind, routes = ("tool", catalog.tools) if method == "tools/call" else ("prompt", catalog.prompts)
        found = routes.get(name)
        if found is None:
            return Target(_unknown(catalog, kind, name), orjson.dumps(params), False, name)
        if isinstance(found, FamilyRoute):
            return _family(found, name, params)
        if found.name != name:
            params = {**params, "name": found.name}
        return Target(found.server, orjson.dumps(params), found.safe, found.name)
    if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        uri = _string(params, "uri", method)
        return Target(_resource(catalog, uri), orjson.dumps(params), True)
    if method == "completion/complete":
        return _completion(catalog, params)
    raise BadRequest(errors.METHOD_NOT_FOUND, f"Method not found: {method}")


def _family(family: FamilyRoute, name: str, params: dict[str, Any]) -> Target:
    """A family tool goes to the member its instance argument names, without that argument."""
    try:
        member, arguments = family.resolve(name, params.get("arguments") or {})
    except RouteError as exc:
        raise BadRequest(errors.INVALID_PARAMS, f"Invalid params: {exc.message}") from None
    body = orjson.dumps({**params, "name": member.name, "arguments": arguments})
    return Target(member.server, body, member.safe, member.name)


def _completion(catalog: Catalog, params: dict[str, Any]) -> Target:
    """completion/complete goes where its prompt or resource template is."""
    ref = params.get("ref")
    if not isinstance(ref, dict):
        raise BadRequest(errors.INVALID_PARAMS, "Invalid params: completion/complete requires params.ref, an object")
    if ref.get("type") == "ref/prompt":
        name = _string(ref, "name", "ref/prompt")
        prompt = catalog.prompts.get(name)
        if prompt is None:
            return Target(_unknown(catalog, "prompt", name), orjson.dumps(params), True)
        if prompt.name != name:
            params = {**params, "ref": {**ref, "name": prompt.name}}
        return Target(prompt.server, orjson.dumps(params), True)
    if ref.get("type") == "ref/resource":
        uri = _string(ref, "uri", "ref/resource")
        server = catalog.template_server(uri)
        return Target(server or _resource(catalog, uri), orjson.dumps(params), True)
    raise BadRequest(errors.INVALID_PARAMS, "Invalid params: ref.type must be ref/prompt or ref/resource")


def _resource(catalog: Catalog, uri: str) -> str:
    server = catalog.resource_server(uri)
    if server is not None:
        return server
    if catalog.sole is not None:  # servers serve URIs they do not list; with one server, it is the one to ask
        return catalog.sole.name
    raise BadRequest(errors.RESOURCE_NOT_FOUND, "Resource not found", {"uri": uri})
