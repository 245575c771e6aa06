from collections.abc import Iterator

import pytest

from tests.kube import FakeApi, running_apiserver


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with running_apiserver() as server:
        yield server
