"""Run by bench/revision.py inside an exported tree (its working directory and PYTHONPATH): what that revision's
service settings read, and what they make of a given environment. Prints one JSON object.

python -c "$(cat bench/_probe.py)" names
python -c "$(cat bench/_probe.py)" values '{"worker": {"env": {...}, "fields": ["id"]}, ...}'

It imports only the tree's settings classes, pydantic and orjson, so that it runs against any revision of muster.
"""

import importlib
import os
import sys
from typing import Any

import orjson
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROLES = ("discovery", "worker", "ingress")


def settings_class(role: str) -> type[BaseSettings]:
    """The class in services/<role>/config.py that reads MUSTER_<ROLE>_*, whatever the revision calls it."""
    module = importlib.import_module(f"services.{role}.config")
    prefix = f"MUSTER_{role.upper()}_"
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, BaseSettings)
            and value.__module__ == module.__name__
            and value.model_config.get("env_prefix") == prefix
        ):
            return value
    raise SystemExit(f"services/{role}/config.py has no settings class with env_prefix {prefix}")


def env_names(cls: type[BaseSettings]) -> dict[str, list[str]]:
    """Field -> the variables it is read from, its own name first: an explicit alias (the older revisions), else
    the class's prefix, and MUSTER_<NAME> for the fields it shares with the other services (`shared_names`)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    shared: frozenset[str] = getattr(cls, "shared_names", frozenset())
    found: dict[str, list[str]] = {}
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            found[field] = [c.upper() for c in alias.choices if isinstance(c, str)]
        elif isinstance(alias, str):
            found[field] = [alias.upper()]
        else:
            found[field] = [f"{prefix}{field}".upper()] + ([f"MUSTER_{field}".upper()] if field in shared else [])
    return found


def names() -> dict[str, Any]:
    report: dict[str, Any] = {}
    for role in ROLES:
        cls = settings_class(role)
        package = importlib.import_module(f"services.{role}")
        report[role] = {"class": cls.__name__, "file": package.__file__, "fields": env_names(cls)}
    return report


def values(spec: dict[str, Any]) -> dict[str, Any]:
    """Each role's settings as its service would read them from exactly `env` (no other MUSTER_ variable)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    report: dict[str, Any] = {}
    for role, wanted in spec.items():
        os.environ.clear()
        os.environ.update({**clean, **wanted["env"]})
        settings = settings_class(role)()
        report[role] = {field: str(getattr(settings, field)) for field in wanted["fields"]}
    return report


if __name__ == "__main__":
    result = names() if sys.argv[1] == "names" else values(orjson.loads(sys.argv[2]))
    sys.stdout.buffer.write(orjson.dumps(result))
