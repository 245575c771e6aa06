from collections.abc import AsyncIterator

import pytest
from kubernetes.aio import client

from tests.kube import FakeApi
from tests.kube.conftest import api, apiserver  # noqa: F401  (the test API server's fixtures, shared)


@pytest.fixture
async def kube(api: FakeApi) -> AsyncIterator[client.ApiClient]:  # noqa: F811
    async with client.ApiClient(client.Configuration(host=api.url)) as http:
        yield http
