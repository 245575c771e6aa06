"""From a client request to the upstream call it becomes: which server, which upstream name, which params.

Everything that only needs checking, not executing, is checked here, so that a bad request is answered
without a trip through the queue.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from shared import errors
from shared.catalog import CatalogView


class BadRequest(Exception):
    """Answered as a JSON-RPC error with this code and message."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class Target:
    server: str
    params: bytes  # as the upstream must receive them
    safe: bool
    timeout: float | None = None


def _string(params: dict[str, Any], key: str, method: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(errors.INVALID_PARAMS, f"Invalid params: {method} requires params.{key}, a non-empty string")
    return value


def _object(params: dict[str, Any], key: str) -> None:
    value = params.get(key)
    if value is not None and not isinstance(value, dict):
        raise BadRequest(errors.INVALID_PARAMS, f"Invalid params: params.{key} must be an object")


def route(view: CatalogView, method: str, params: Any) -> Target:
    if not isinstance(params, dict):
        raise BadRequest(errors.INVALID_PARAMS, f"Invalid params: {method} requires params, an object")
    if method == "tools/call":
        name = _string(params, "name", method)
        _object(params, "arguments")
        tool = view.tools.get(name)
        if tool is None:
            raise BadRequest(errors.INVALID_PARAMS, f"Unknown tool: {name}")
        if tool.name != name:
            params = {**params, "name": tool.name}
        return Target(tool.server, orjson.dumps(params), tool.safe)
    if method == "prompts/get":
        name = _string(params, "name", method)
        _object(params, "arguments")
        prompt = view.prompts.get(name)
        if prompt is None:
            raise BadRequest(errors.INVALID_PARAMS, f"Unknown prompt: {name}")
        if prompt.name != name:
            params = {**params, "name": prompt.name}
        return Target(prompt.server, orjson.dumps(params), True)
    if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        uri = _string(params, "uri", method)
        server = view.resource_server(uri)
        if server is None:
            raise BadRequest(errors.RESOURCE_NOT_FOUND, "Resource not found", {"uri": uri})
        return Target(server, orjson.dumps(params), True)
    if method == "completion/complete":
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise BadRequest(
                errors.INVALID_PARAMS, "Invalid params: completion/complete requires params.ref, an object"
            )
        if ref.get("type") == "ref/prompt":
            name = _string(ref, "name", "ref/prompt")
            prompt = view.prompts.get(name)
            if prompt is None:
                raise BadRequest(errors.INVALID_PARAMS, f"Unknown prompt: {name}")
            if prompt.name != name:
                params = {**params, "ref": {**ref, "name": prompt.name}}
            return Target(prompt.server, orjson.dumps(params), True)
        if ref.get("type") == "ref/resource":
            uri = _string(ref, "uri", "ref/resource")
            server = view.template_server(uri) or view.resource_server(uri)
            if server is None:
                raise BadRequest(errors.RESOURCE_NOT_FOUND, "Resource not found", {"uri": uri})
            return Target(server, orjson.dumps(params), True)
        raise BadRequest(errors.INVALID_PARAMS, "Invalid params: ref.type must be ref/prompt or ref/resource")
    raise BadRequest(errors.METHOD_NOT_FOUND, f"Method not found: {method}")
