"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), the two patch types the API server takes for custom
resources (strategic merge patch is refused for them with 415, as a real API server does)."""

import copy
from collections.abc import Callable
from typing import Any


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    if not parts:
        raise PatchError("the root cannot be the target of this operation")
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def _get(doc: Any, path: str) -> Any:
    node = doc
    try:
        for part in _pointer(path):
            node = node[int(part)] if isinstance(node, list) else node[part]
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise PatchError(f"path {path!r} does not exist") from exc
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    node, last = _parent(doc, parts)
    if isinstance(node, list):
        node.insert(len(node) if last == "-" else int(last), value)
    else:
        node[last] = value
    return doc


def _remove(doc: Any, path: str) -> Any:
    _get(doc, path)
    node, last = _parent(doc, _pointer(path))
    if isinstance(node, list):
        del node[int(last)]
    else:
        del node[last]
    return doc


def _replace(doc: Any, path: str, op: dict[str, Any]) -> Any:
    return _add(_remove(doc, path), path, copy.deepcopy(op["value"]))


def _test(doc: Any, path: str, op: dict[str, Any]) -> Any:
    if _get(doc, path) != op["value"]:
        raise PatchError(f"test operation failed at {path!r}")
    return doc


def _move(doc: Any, path: str, op: dict[str, Any]) -> Any:
    value = copy.deepcopy(_get(doc, op["from"]))
    return _add(_remove(doc, op["from"]), path, value)


# Each operation takes the document, the operation's path and the operation; it returns the new document.
OPERATIONS: dict[str, Callable[[Any, str, dict[str, Any]], Any]] = {
    "add": lambda doc, path, op: _add(doc, path, copy.deepcopy(op["value"])),
    "remove": lambda doc, path, op: _remove(doc, path),
    "replace": _replace,
    "test": _test,
    "move": _move,
    "copy": lambda doc, path, op: _add(doc, path, copy.deepcopy(_get(doc, op["from"]))),
}


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    try:
        for op in operations:
            kind, path = op["op"], op["path"]
            apply = OPERATIONS.get(kind)
            if apply is None:
                raise PatchError(f"unknown operation {kind!r}")
            doc = apply(doc, path, op)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        if isinstance(exc, PatchError):
            raise
        raise PatchError(f"the patch cannot be applied: {exc}") from exc
    return doc
