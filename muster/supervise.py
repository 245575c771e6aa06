"""`muster up` as a small init system: a child that exits is started again after a backoff, and the stack keeps
serving meanwhile; only a child that keeps crashing (max_crashes within window seconds) stops the whole stack,
with a message that says which and why.

    supervisor = Supervisor(stack, log=print)
    while serving:
        supervisor.poll()   # raises CrashLoop when a child crashed too often
        time.sleep(0.2)

The backoff doubles with each crash in a row (first_backoff, 2x, 4x ... max_backoff) and starts over once a
child has run for `stable_after` seconds. A child may get a fresh environment on each restart (`renew`): a worker
gets a new consumer name, so that its successor never mistakes the dead one's calls for its own.
"""

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from muster.stack import Child, Stack, exit_reason


class CrashLoop(Exception):
    """A child crashed too often in too short a time: the stack stops."""


@dataclass
class _Record:
    started: float
    crashes: deque[float] = field(default_factory=deque)
    in_a_row: int = 0
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    def __init__(
        self,
        stack: Stack,
        *,
        log: Callable[[str], None],
        max_crashes: int = 5,
        window: float = 60.0,
        first_backoff: float = 0.5,
        max_backoff: float = 10.0,
        stable_after: float = 30.0,
        renew: Callable[[Child, int], dict[str, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stack = stack
        self.log = log
        self.max_crashes = max_crashes
        self.window = window
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.renew = renew
        self.clock = clock
        self.records: dict[int, _Record] = {}  # by id(child): a name may repeat in tests, a Child object does not

    def poll(self) -> None:
        now = self.clock()
        for child in list(self.stack.children):
            record = self.records.get(id(child))
            if record is None:
                record = self.records[id(child)] = _Record(started=now)
            if record.restart_at is not None:
                if now >= record.restart_at:
                    self._restart(child, record, now)
                continue
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                if record.in_a_row and now - record.started >= self.stable_after:
                    record.in_a_row = 0
                continue
            self._crashed(child, record, code, now)

    def _crashed(self, child: Child, record: _Record, code: int, now: float) -> None:
        record.crashes.append(now)
        while record.crashes and record.crashes[0] <= now - self.window:
            record.crashes.popleft()
        if len(record.crashes) >= self.max_crashes:
            raise CrashLoop(
                f"{child.name} exited {len(record.crashes)} times within {self.window:g} s "
                f"(last: {exit_reason(code)}); stopping muster"
            )
        delay = min(self.max_backoff, self.first_backoff * 2**record.in_a_row)
        record.in_a_row += 1
        record.restart_at = now + delay
        self.log(
            f"{child.name} exited ({exit_reason(code)}); starting it again in {delay:g} s "
            f"(crash {len(record.crashes)} of {self.max_crashes} allowed within {self.window:g} s)"
        )

    def _restart(self, child: Child, record: _Record, now: float) -> None:
        record.restart_at = None
        record.started = now
        record.restarts += 1
        env = self.renew(child, record.restarts) if self.renew is not None else None
        self.stack.restart(child, env)
        self.log(f"{child.name} started again (pid {child.pid})")
