"""Stack.valkey against real valkey-servers: one Valkey per data folder at a time. A second one on the folder of a
running one would load its data and append to its file (the sign-in bench's Valkey served the harness's catalog
and discovery lease that way, and its forwardToken calls named a tool its muster did not have yet)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from muster.stack import Stack, free_port


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "first", log=lambda _: None)
    yield s
    s.stop()


def test_a_second_valkey_on_the_folder_of_a_running_one_is_refused(stack: Stack, tmp_path: Path) -> None:
    first = Redis.from_url(stack.valkey(free_port()), socket_timeout=5)
    try:
        first.set("catalog", "the first stack's")
        with pytest.raises(RuntimeError, match=r"runs on .* already"):
            stack.valkey(free_port())
        assert [c.name for c in stack.children] == ["valkey"]  # nothing was started

        stack.data = tmp_path / "second"
        second = Redis.from_url(stack.valkey(free_port()), socket_timeout=5)
        try:
            assert second.get("catalog") is None  # a Valkey of its own starts empty
        finally:
            second.close()
    finally:
        first.close()


def test_a_valkey_started_again_on_its_folder_after_it_stopped_keeps_its_data(stack: Stack) -> None:
    port = free_port()
    with Redis.from_url(stack.valkey(port), socket_timeout=5) as client:
        client.set("kept", "yes")
    stack.stop_child(stack.children[0])
    with Redis.from_url(stack.valkey(port), socket_timeout=5) as client:
        assert client.get("kept") == b"yes"
