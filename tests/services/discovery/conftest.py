from collections.abc import AsyncIterator, Iterator

import pytest
from kubernetes.aio import client

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


@pytest.fixture
async def kube(api: FakeApi) -> AsyncIterator[client.ApiClient]:
    async with client.ApiClient(client.Configuration(host=api.url)) as http:
        yield http
