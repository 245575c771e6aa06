"""Names that would shadow each other: in prefix mode `never` (or with a shared tool prefix) two servers can
offer the same tool or prompt name; the later server is not exposed at all, and its record says why."""

from shared.messages import ServerRecord
from shared.naming import expose


def _names(record: ServerRecord) -> list[tuple[str, str]]:
    names = [("tool", expose(record.prefix, t["name"])) for t in record.tools]
    return names + [("prompt", expose(record.prefix, p["name"])) for p in record.prompts]


def resolve_collisions(records: dict[str, ServerRecord]) -> dict[str, ServerRecord]:
    """The records, with every server whose names would shadow another's (or repeat its own) not exposed."""
    owners: dict[tuple[str, str], str] = {}
    result = {}
    for name, record in records.items():
        if record.state != "Connected":
            result[name] = record
            continue
        mine = _names(record)
        clash = next((k for k in mine if k in owners), None)
        if clash is None and len(set(mine)) < len(mine):
            clash = next(k for k in mine if mine.count(k) > 1)
        if clash is not None:
            other = owners.get(clash, name)
            error = (
                f"{clash[0]} name {clash[1]!r} collides with server {other!r}; the server is not exposed "
                f"(set spec.toolPrefix or use prefix mode always)"
            )
            result[name] = record.model_copy(update={"exposed": False, "error": error})
            continue
        for key in mine:
            owners[key] = name
        result[name] = record
    return result
