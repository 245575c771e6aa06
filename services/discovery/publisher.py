"""The records discovery has published, and publishing what changed: consumer groups first (so that no call
waits in a stream no group reads), then the records, then one capability event naming the changed servers."""

import logging

from redis.asyncio import Redis

from shared import records, streams
from shared.messages import CapabilityChange, ServerRecord, encode
from shared.valkey import Outbox, ensure_group, xadd

logger = logging.getLogger(__name__)


def _content(record: ServerRecord | None) -> object:
    return None if record is None else record.model_dump(exclude={"revision"})


class Publisher:
    def __init__(self, client: Redis, outbox: Outbox) -> None:
        self.client = client
        self.outbox = outbox
        self.published: dict[str, ServerRecord] = {}
        self.groups: set[str] = set()

    def forget(self) -> None:
        """Another discovery leads now; what it publishes is its own business."""
        self.published, self.groups = {}, set()

    async def check(self) -> bool:
        """Load what is published when leading anew; False when Valkey lost the records (restarted empty)."""
        if not self.published:
            self.published = {k: v for k, v in (await records.load(self.client)).items() if v is not None}
            return True
        if await records.count(self.client) < len(self.published):
            self.forget()
            return False
        return True

    async def publish(self, wanted: dict[str, ServerRecord]) -> None:
        changed = [r for n, r in wanted.items() if _content(self.published.get(n)) != _content(r)]
        removed = [n for n in self.published if n not in wanted]
        if not changed and not removed:
            return
        for record in changed:
            if record.name not in self.groups:
                await ensure_group(self.client, record.name)
                self.groups.add(record.name)
        stored = [
            r.model_copy(update={"revision": (self.published[r.name].revision + 1) if r.name in self.published else 1})
            for r in changed
        ]
        await records.store(self.client, stored, removed)
        change = CapabilityChange(servers=sorted([r.name for r in stored] + removed))
        await self.outbox.send(*xadd(streams.CAPABILITIES, streams.EVENTS_MAXLEN, encode(change)))
        for record in stored:
            self.published[record.name] = record
            logger.info(
                "catalog: %s %s, %d tools, %d resources, %d prompts%s",
                record.name,
                record.state,
                len(record.tools),
                len(record.resources),
                len(record.prompts),
                f" (not exposed: {record.error})" if not record.exposed else "",
            )
        for name in removed:
            del self.published[name]
            logger.info("catalog: %s removed", name)
