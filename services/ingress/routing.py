"""From a client request to the upstream call it becomes: which server, which upstream name, which params.

Everything that only needs checking, not executing, is checked here, so that a bad request is answered
without a trip through the queue. The params travel on as the bytes the client sent: a name that muster
exposes under another name is replaced in place, and nothing else is re-encoded.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from shared import errors
from shared.catalog import Catalog, FamilyRoute
from shared.meta.errors import RouteError
from shared.rawjson import Document


@dataclass(frozen=True, slots=True)
class Target:
    server: str
    params: bytes  # as the upstream must receive them
    safe: bool
    name: str = ""  # the upstream's name of the tool or prompt called; "" for other methods


def _string(params: dict[str, Any], key: str, method: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise errors.InvalidParams(f"Invalid params: {method} requires params.{key}, a non-empty string")
    return value


def _object(params: dict[str, Any], key: str) -> None:
    value = params.get(key)
    if value is not None and not isinstance(value, dict):
        raise errors.InvalidParams(f"Invalid params: params.{key} must be an object")


def _unknown(catalog: Catalog, kind: str, name: str) -> str:
    # With one server whose names pass unchanged, the server decides about names muster does not know.
    if catalog.sole is not None:
        return catalog.sole.name
    raise errors.InvalidParams(f"Unknown {kind}: {name}")


def _renamed(params: Document, key: str, name: str) -> bytes:
    return params.rebuilt({key: orjson.dumps(name)})


def route(catalog: Catalog, method: str, params: Document | None) -> Target:
    if params is None or not isinstance(params.value, dict):
        raise errors.InvalidParams(f"Invalid params: {method} requires params, an object")
    value = params.value
    if method in ("tools/call", "prompts/get"):
        name = _string(value, "name", method)
        _object(value, "arguments")
        kind, routes = ("tool", catalog.tools) if method == "tools/call" else ("prompt", catalog.prompts)
        found = routes.get(name)
        if found is None:
            return Target(_unknown(catalog, kind, name), params.data, False, name)
        if isinstance(found, FamilyRoute):
            return _family(found, name, params)
        data = params.data if found.name == name else _renamed(params, "name", found.name)
        return Target(found.server, data, found.safe, found.name)
    if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        uri = _string(value, "uri", method)
        return Target(_resource(catalog, uri), params.data, True)
    if method == "completion/complete":
        return _completion(catalog, params)
    raise errors.MethodNotFound(f"Method not found: {method}")


def _family(family: FamilyRoute, name: str, params: Document) -> Target:
    """A family tool goes to the member its instance argument names, without that argument; the other arguments
    travel as the client sent them."""
    arguments = params.child("arguments")
    if arguments is not None and not isinstance(arguments.value, dict):
        arguments = None  # null: none given
    try:
        member, _ = family.resolve(name, arguments.value if arguments is not None else {})
    except RouteError as exc:
        raise errors.InvalidParams(f"Invalid params: {exc.message}") from None
    replace = {"name": orjson.dumps(member.name)}
    if arguments is not None:
        replace["arguments"] = arguments.rebuilt({}, frozenset({family.instance_arg}))
    return Target(member.server, params.rebuilt(replace), member.safe, member.name)


def _completion(catalog: Catalog, params: Document) -> Target:
    """completion/complete goes where its prompt or resource template is."""
    ref = params.child("ref")
    if ref is None or not isinstance(ref.value, dict):
        raise errors.InvalidParams("Invalid params: completion/complete requires params.ref, an object")
    if ref.value.get("type") == "ref/prompt":
        name = _string(ref.value, "name", "ref/prompt")
        prompt = catalog.prompts.get(name)
        if prompt is None:
            return Target(_unknown(catalog, "prompt", name), params.data, True)
        if prompt.name == name:
            return Target(prompt.server, params.data, True)
        return Target(prompt.server, params.rebuilt({"ref": _renamed(ref, "name", prompt.name)}), True)
    if ref.value.get("type") == "ref/resource":
        uri = _string(ref.value, "uri", "ref/resource")
        server = catalog.template_server(uri)
        return Target(server or _resource(catalog, uri), params.data, True)
    raise errors.InvalidParams("Invalid params: ref.type must be ref/prompt or ref/resource")


def _resource(catalog: Catalog, uri: str) -> str:
    server = catalog.resource_server(uri)
    if server is not None:
        return server
    if catalog.sole is not None:  # servers serve URIs they do not list; with one server, it is the one to ask
        return catalog.sole.name
    raise errors.ResourceNotFound("Resource not found", {"uri": uri})
