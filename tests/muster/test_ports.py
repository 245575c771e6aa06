"""free_port with MUSTER_PORTS: ports from the range, never one that something listens on, each call a new one."""

import os
import socket

import pytest

from muster.stack import free_port, port_in_use, port_range


def test_ports_come_from_the_range_in_turn_and_skip_a_taken_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three free ports from this test process's own range (tests/conftest.py): nothing else takes those meanwhile,
    # where a port next to one the kernel picked may be any outgoing connection's.
    first, last = port_range(os.environ["MUSTER_PORTS"])
    port = next(p for p in range(first + 1, last) if not any(port_in_use("127.0.0.1", q) for q in (p - 1, p, p + 1)))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        low, high = port - 1, port + 1  # three ports, the middle one taken
        monkeypatch.setenv("MUSTER_PORTS", f"{low}-{high}")
        picked = [free_port() for _ in range(4)]
    assert port not in picked and set(picked) == {low, high}
    assert picked[0] != picked[1] and picked[2] == picked[0]  # in turn, around the range


def test_a_range_with_every_port_taken_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("MUSTER_PORTS", f"{port}-{port}")
        with pytest.raises(SystemExit, match=rf"MUSTER_PORTS='{port}-{port}': every port of the range is in use"):
            free_port()


@pytest.mark.parametrize("raw", ["20000", "30000-20000", "80-90", "20000-70000", "a-b", "-"])
def test_a_bad_range_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(SystemExit, match=r"^MUSTER_PORTS=.*expected LOW-HIGH"):
        port_range(raw)


def test_without_a_range_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUSTER_PORTS")
    assert 0 < free_port() < 65536
