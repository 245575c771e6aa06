"""One active discovery at a time: a lease in Valkey that the leader renews and the others wait for."""

import logging
import math
import time

from shared import streams
from shared.valkey import COMPARE_AND_DELETE, Outbox

logger = logging.getLogger(__name__)

# KEYS: lease; ARGV: holder, ttl ms. Take the lease if free, renew it if ours; 1 when we hold it after the call.
ACQUIRE = b"""
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class Lease:
    def __init__(self, outbox: Outbox, holder: str, ttl_seconds: float) -> None:
        self.outbox = outbox
        self.holder = holder
        self.ttl_ms = int(ttl_seconds * 1000)
        self.held = False
        self.retry_period = ttl_seconds / 3
        self._valid_until = -math.inf
        self._known_until = -math.inf

    @property
    def is_leader(self) -> bool:
        """Held, and renewed recently enough that the key cannot have expired for another to take it."""
        return self.held and time.monotonic() < self._valid_until

    @property
    def leader_known(self) -> bool:
        """Valkey answered within the lease's ttl: this discovery leads or another one holds the key (or a
        renewal, due within a third of the ttl, takes it when it expires)."""
        return self.is_leader or time.monotonic() < self._known_until

    async def renew(self) -> bool:
        """Takes the lease if it is free, renews it if it is ours; True while this discovery leads."""
        started = time.monotonic()
        held = bool(await self.outbox.script(ACQUIRE, (streams.DISCOVERY_LEADER,), (self.holder, self.ttl_ms)))
        if held != self.held:
            logger.info("discovery %s %s the lead", self.holder, "took" if held else "lost")
        self.held = held
        self._known_until = started + self.ttl_ms / 1000
        if held:  # the key lives ttl from when Valkey ran the script, which is after `started`
            self._valid_until = started + self.ttl_ms / 1000 * 0.7
        return held

    async def release(self) -> None:
        if self.held:
            self.held, self._valid_until = False, -math.inf
            await self.outbox.script(COMPARE_AND_DELETE, (streams.DISCOVERY_LEADER,), (self.holder,))
