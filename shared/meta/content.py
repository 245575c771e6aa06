"""How meta-tools wrap what an upstream returned, and where binary data goes.

The Go muster describes image and audio items inside its JSON text as `{"dataSize","mimeType","type"}` and drops
their bytes (its defect §8.8); blobs of get_resource become `[Binary data: N bytes]`. Here the JSON text keeps
exactly that description, and the items themselves, exactly as the upstream sent them (the base64 string is never
decoded or re-encoded), follow the text as native content of the same result:

    content: [ {"type":"text","text": <the Go-shaped JSON>}, <image item>, <audio item>, <resource item> ... ]

Why not the base64 inside the JSON text: there a model reads the bytes as text (a 100 kB screenshot is ~35k
tokens of noise) and no client can show the image; as native items the client renders them, the model's context
gets the small description, and an agent that unwraps content[0] as the Go muster's envelope still finds it there.
"""

from collections.abc import Mapping, Sequence
from typing import Any

BINARY_TYPES = frozenset({"image", "audio"})


def describe(item: Mapping[str, Any]) -> Any:
    """One content item as it appears inside the JSON text: Go's map for text, image and audio (keys sorted),
    extended with the item's own annotations and _meta; any other item as it came."""
    kind = item.get("type")
    if kind == "text":
        return dict(sorted({**item, "text": item.get("text", ""), "type": "text"}.items()))
    if kind in BINARY_TYPES:
        data = item.get("data")
        described = {k: v for k, v in item.items() if k != "data"}
        described["dataSize"] = len(data) if isinstance(data, str) else 0
        described.setdefault("mimeType", "")
        return dict(sorted(described.items()))
    return item


def binary_items(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The items whose bytes the JSON text only describes: they travel natively, untouched."""
    return [item for item in items if item.get("type") in BINARY_TYPES]


def describe_prompt_content(item: Mapping[str, Any]) -> Any:
    """A prompt message's content as get_prompt shows it (Go's serializePromptContent)."""
    if item.get("type") == "resource":
        return {"resource": item.get("resource"), "type": "embeddedResource"}
    return describe(item)


def resource_text(contents: Sequence[Mapping[str, Any]]) -> tuple[str, list[Mapping[str, Any]]]:
    """get_resource's text (text parts joined by newlines, blobs as `[Binary data: N bytes]`) and the blobs as
    embedded resources that carry the bytes."""
    parts: list[str] = []
    blobs: list[Mapping[str, Any]] = []
    for entry in contents:
        if isinstance(entry.get("text"), str):
            parts.append(entry["text"])
        elif isinstance(entry.get("blob"), str):
            parts.append(f"[Binary data: {len(entry['blob'])} bytes]")
            blobs.append({"type": "resource", "resource": entry})
    return "\n".join(parts), blobs


def text_result(text: str, is_error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if is_error:
        result["isError"] = True
    return result
