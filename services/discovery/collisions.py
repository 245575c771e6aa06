"""Names that would shadow each other: in prefix mode `never` (or with a shared tool prefix) two servers can
offer the same tool or prompt name; the later server is not exposed at all, and its record says why.

Members of one family share their tool names on purpose (each tool is offered once, with an instance selector:
shared/meta/families.py), so a name is claimed by its family, not by the member that offers it.
"""

from shared.messages import ServerRecord
from shared.meta.families import family_tool_name, split_families
from shared.naming import expose

Claim = tuple[str, str]  # (kind, exposed name)


def _claims(record: ServerRecord, split: dict[str, str]) -> list[tuple[Claim, str]]:
    """The names the record's server would be listed under, each with who owns it (a server or a family)."""
    server = f"server {record.name!r}"
    family = record.family
    if family is not None and family.name not in split:
        owner = f"family {family.name!r}"
        tools = [(("tool", family_tool_name(family.name, t["name"], bool(record.prefix))), owner) for t in record.tools]
    else:
        tools = [(("tool", expose(record.prefix, t["name"])), server) for t in record.tools]
    return tools + [(("prompt", expose(record.prefix, p["name"])), server) for p in record.prompts]


def _not_exposed(record: ServerRecord, clash: Claim, other: str) -> ServerRecord:
    error = (
        f"{clash[0]} name {clash[1]!r} collides with {other}; the server is not exposed "
        f"(set spec.toolPrefix or use prefix mode always)"
    )
    return record.model_copy(update={"exposed": False, "error": error})


def resolve_collisions(records: dict[str, ServerRecord]) -> dict[str, ServerRecord]:
    """The records, with every server whose names would shadow another's (or repeat its own) not exposed."""
    split = split_families(records.values())
    owners: dict[Claim, str] = {}
    result = {}
    for name, record in records.items():
        if record.state != "Connected":
            result[name] = record
            continue
        mine = _claims(record, split)
        clash = next(((k, owners[k]) for k, owner in mine if k in owners and owners[k] != owner), None)
        keys = [k for k, _ in mine]
        if clash is None and len(set(keys)) < len(keys):
            clash = next((k, f"server {name!r}") for k in keys if keys.count(k) > 1)
        if clash is not None:
            result[name] = _not_exposed(record, *clash)
            continue
        owners.update(mine)
        result[name] = record
    return result
