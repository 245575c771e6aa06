from collections.abc import Iterator

import pytest

from tests.kube import FakeApi, running_apiserver


@pytest.fixture(scope="module")
def apiserver() -> Iterator[FakeApi]:
    with running_apiserver() as server:
        yield server


@pytest.fixture
def api(apiserver: FakeApi) -> FakeApi:
    """The module's test API server, emptied for each test."""
    apiserver.reset()
    return apiserver
