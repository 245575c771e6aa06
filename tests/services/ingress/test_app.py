"""The ingress application's lifespan with sign-in on: a provider that is still starting is waited for."""

import asyncio
from collections.abc import Iterator

import pytest

from muster.stack import free_port
from services.ingress.app import build_authority
from shared.identity.errors import ProviderUnavailable
from tests.oidc import MUSTER_CLIENT, MUSTER_SECRET, OidcProvider, client
from tests.oidc.harness import settings_for, start_valkey

pytestmark = [pytest.mark.slow, pytest.mark.anyio]  # slow: runs oidc-provider


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    stack, url = start_valkey(tmp_path_factory.mktemp("valkey"))
    try:
        yield url
    finally:
        stack.stop()


async def test_the_authorization_server_waits_for_a_provider_that_is_still_starting(valkey: str) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    provider = OidcProvider([client(MUSTER_CLIENT, [f"{base}/oauth/callback"], MUSTER_SECRET)])
    building = asyncio.create_task(build_authority(settings_for(base, provider.issuer, valkey), patience=30))
    await asyncio.sleep(1.0)  # the ingress is trying, the provider is not there yet
    assert not building.done()
    await asyncio.to_thread(provider.start)
    try:
        authority = await asyncio.wait_for(building, 30)
        assert authority.upstream.meta.issuer == provider.issuer
        await authority.close()
    finally:
        provider.stop()


async def test_a_provider_that_never_comes_stops_the_ingress_with_the_reason(valkey: str) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProviderUnavailable):
        await build_authority(settings_for(base, f"http://127.0.0.1:{free_port()}", valkey), patience=1.5)
