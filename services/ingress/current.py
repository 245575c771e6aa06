"""The Catalog this replica serves from, replaced whole whenever server records change."""

import logging
from collections.abc import Callable, Iterable

from shared.catalog import Catalog
from shared.messages import ServerRecord

logger = logging.getLogger(__name__)

LISTS = ("tools", "resources", "prompts")


def _ignore(records: Iterable[ServerRecord]) -> None:
    pass


class CurrentCatalog:
    def __init__(self, on_update: Callable[[Iterable[ServerRecord]], None] = _ignore) -> None:
        self.records: dict[str, ServerRecord] = {}
        self.catalog = Catalog(())
        self.loaded = False
        self.on_update = on_update  # told every record after each update (metrics bound their labels by it)

    def update(self, records: dict[str, ServerRecord | None]) -> set[str]:
        """Apply changed records (None: the server is gone); returns which lists changed: tools, resources, prompts."""
        merged = dict(self.records)
        for name, record in records.items():
            if record is None:
                merged.pop(name, None)
            else:
                merged[name] = record
        old, new = self.catalog, Catalog(merged.values())
        self.records, self.catalog = merged, new
        self.on_update(merged.values())
        for note in sorted(set(new.notes) - set(old.notes)):  # once per change, not once per revision
            logger.info("catalog: %s", note)
        changed = set()
        if old.tools_json != new.tools_json:
            changed.add("tools")
        if old.resources_json != new.resources_json or old.templates_json != new.templates_json:
            changed.add("resources")
        if old.prompts_json != new.prompts_json:
            changed.add("prompts")
        return changed
