"""A circuit breaker per upstream server, in each worker: after `failures` consecutive failures of the kind that
says the server is down (no connection, a dropped connection, 5xx, no answer in time) it opens, and calls fail at
once with -32004 and a retry hint instead of waiting on a server that does not answer. After `cooldown` seconds
one call goes through as a probe (half-open): its success closes the breaker, its failure opens it again, and a
probe that has not answered within `probe_timeout` counts as failed (the call itself goes on to its deadline).

    closed --failures in a row--> open --cooldown--> half-open --probe succeeds--> closed
                                   ^---------probe fails or takes too long------------'
"""

import logging
import time
from collections.abc import Callable
from enum import StrEnum

logger = logging.getLogger(__name__)


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Breaker:
    def __init__(
        self,
        server: str,
        *,
        failures: int = 5,
        cooldown: float = 3.0,
        probe_timeout: float = 10.0,
        on_change: Callable[[str, State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.failures = failures
        self.cooldown = cooldown
        self.probe_timeout = probe_timeout
        self.on_change = on_change
        self.clock = clock
        self.state = State.CLOSED
        self.consecutive = 0
        self.until = 0.0  # open: when a probe may go; half-open: when the probe counts as failed
        self.opened = 0  # how often it opened, for the logs and tests

    def admit(self) -> float | None:
        """None when a call may go to the upstream now; otherwise how many seconds until one may."""
        if self.state is State.CLOSED:
            return None
        now = self.clock()
        if now < self.until:
            return self.until - now
        if self.state is State.OPEN:
            self._change(State.HALF_OPEN)
            self.until = now + self.probe_timeout
            return None  # this call is the probe
        self._open(now, "the probe did not answer in time")
        return self.cooldown

    def succeeded(self) -> None:
        self.consecutive = 0
        if self.state is not State.CLOSED:
            self._change(State.CLOSED)

    def failed(self, why: object) -> None:
        self.consecutive += 1
        if self.state is State.HALF_OPEN or (self.state is State.CLOSED and self.consecutive >= self.failures):
            self._open(self.clock(), why)

    def _open(self, now: float, why: object) -> None:
        self.until = now + self.cooldown
        self.opened += 1
        logger.warning(
            "circuit to %s open for %.1f s after %d failures in a row (last: %s)",
            self.server,
            self.cooldown,
            self.consecutive,
            why,
        )
        self._change(State.OPEN)

    def _change(self, state: State) -> None:
        if state is State.CLOSED:
            logger.info("circuit to %s closed: it answers again", self.server)
        self.state = state
        if self.on_change is not None:
            self.on_change(self.server, state)
