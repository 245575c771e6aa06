from pathlib import Path

import pytest
from kubernetes.aio import client

from services.discovery.kube import MCPSERVERS, NoCluster, api_client
from tests.kube import FakeApi, mcpserver

pytestmark = pytest.mark.anyio


async def test_a_named_kubeconfig_is_used_with_its_server_and_credentials(api: FakeApi, tmp_path: Path) -> None:
    api.create(mcpserver("a"))
    http = await api_client(api.kubeconfig(tmp_path))
    try:
        assert http.configuration.host == api.url
        listing = await client.CustomObjectsApi(http).list_namespaced_custom_object(
            *MCPSERVERS[:2], "muster", MCPSERVERS[2]
        )
        assert [i["metadata"]["name"] for i in listing["items"]] == ["a"]  # type: ignore[index]
    finally:
        await http.close()  # type: ignore[no-untyped-call]  # the client leaves close() unannotated


async def test_no_cluster_to_talk_to_is_one_clear_error_naming_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("apiVersion: v1\nkind: Config\n")
    for kubeconfig in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(NoCluster, match=f"no usable kubeconfig \\({kubeconfig}\\)"):
            await api_client(kubeconfig)
