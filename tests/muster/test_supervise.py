"""The supervisor against real child processes: what exits is started again after a growing pause, a child that
keeps crashing stops the stack, and a child that ran long enough starts over with the shortest pause. Only the
clock the supervisor reads is the test's: the processes, their exits and their signals are real."""

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from muster.stack import Child, Stack, exit_reason
from muster.supervise import CrashLoop, Supervisor

CRASH = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_exit(child: Child) -> None:
    assert child.process is not None
    child.process.wait(30)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.stop()


def test_an_exited_child_is_started_again_after_a_backoff_that_doubles(stack: Stack) -> None:
    lines: list[str] = []
    clock = Clock()
    supervisor = Supervisor(stack, log=lines.append, clock=clock, first_backoff=1, max_backoff=3, max_crashes=10)
    child = stack.start("flaky", CRASH)
    pids = [child.pid]
    for expected_delay in (1, 2, 3, 3):
        wait_exit(child)
        supervisor.poll()  # notices the exit, schedules the restart
        assert lines[-1].startswith(f"flaky exited (exit code 3); starting it again in {expected_delay:g} s")
        clock.now += expected_delay - 0.01
        supervisor.poll()
        assert child.pid == pids[-1], "not before its backoff"
        clock.now += 0.01
        supervisor.poll()
        assert child.pid != pids[-1] and lines[-1] == f"flaky started again (pid {child.pid})"
        pids.append(child.pid)


def test_a_child_that_keeps_crashing_stops_the_stack_with_a_message_that_names_it(stack: Stack) -> None:
    clock = Clock()
    supervisor = Supervisor(stack, log=lambda _: None, clock=clock, max_crashes=3, window=60, first_backoff=1)
    child = stack.start("discovery", CRASH)
    with pytest.raises(CrashLoop) as loop:
        for _ in range(3):
            wait_exit(child)
            supervisor.poll()
            clock.now += 5
            supervisor.poll()
    assert str(loop.value) == "discovery exited 3 times within 60 s (last: exit code 3); stopping muster"


def test_crashes_further_apart_than_the_window_never_stop_the_stack(stack: Stack) -> None:
    clock = Clock()
    supervisor = Supervisor(stack, log=lambda _: None, clock=clock, max_crashes=2, window=10, first_backoff=1)
    child = stack.start("worker 1", CRASH)
    for _ in range(4):
        wait_exit(child)
        supervisor.poll()
        clock.now += 11
        supervisor.poll()  # restarted; its next crash is the only one within the window


def test_a_child_that_ran_long_enough_starts_over_with_the_shortest_backoff(stack: Stack) -> None:
    lines: list[str] = []
    clock = Clock()
    supervisor = Supervisor(stack, log=lines.append, clock=clock, first_backoff=1, stable_after=30, max_crashes=10)
    child = stack.start("worker 1", CRASH)
    wait_exit(child)
    supervisor.poll()
    clock.now += 1
    supervisor.poll()  # restarted: the next backoff would be 2 s
    child.argv = SLEEP  # this incarnation keeps running ...
    wait_exit(child)
    supervisor.poll()
    clock.now += 2
    supervisor.poll()
    clock.now += 31
    supervisor.poll()  # ... long enough to count as healthy
    assert child.process is not None
    child.process.send_signal(signal.SIGKILL)
    wait_exit(child)
    supervisor.poll()
    assert lines[-1].startswith("worker 1 exited (killed by SIGKILL); starting it again in 1 s")


def test_a_restarted_child_gets_a_fresh_environment_when_asked(stack: Stack) -> None:
    clock = Clock()
    renewed: list[int] = []

    def renew(child: Child, restarts: int) -> dict[str, str]:
        renewed.append(restarts)
        return {"MUSTER_WORKER_ID": f"worker-1-{restarts}"}

    supervisor = Supervisor(stack, log=lambda _: None, clock=clock, first_backoff=1, renew=renew)
    child = stack.start("worker 1", CRASH, {"MUSTER_WORKER_ID": "worker-1"})
    for restarts in (1, 2):
        wait_exit(child)
        supervisor.poll()
        clock.now += 10
        supervisor.poll()
        assert child.env["MUSTER_WORKER_ID"] == f"worker-1-{restarts}"
    assert renewed == [1, 2]


def test_exit_reasons_read_as_a_person_would_say_them() -> None:
    assert exit_reason(0) == "exit code 0"
    assert exit_reason(1) == "exit code 1"
    assert exit_reason(-9) == "killed by SIGKILL"
    assert exit_reason(-15) == "killed by SIGTERM"


def test_stop_stops_a_group_together_and_the_last_started_first(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "order"
    # each child writes its name when it gets SIGTERM, then takes a moment to exit
    script = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        f"    open({str(log)!r}, 'a').write(sys.argv[1] + ' ' + str(time.monotonic()) + '\\n')\n"
        "    time.sleep(0.5)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    for name, group in (("valkey", ""), ("worker-1", "workers"), ("worker-2", "workers"), ("ingress", "")):
        stack.start(name, [sys.executable, "-c", script, name], group=group)
    time.sleep(1.5)  # every child has its handler
    started = time.monotonic()
    stack.stop()
    assert time.monotonic() - started < 5
    stops = [line.split() for line in log.read_text().splitlines()]
    names = [name for name, _ in stops]
    at = {name: float(t) for name, t in stops}
    assert names[0] == "ingress" and names[-1] == "valkey"
    assert abs(at["worker-1"] - at["worker-2"]) < 0.3, "the workers stop together"
    assert at["worker-1"] - at["ingress"] >= 0.4, "after the ingress has stopped"
