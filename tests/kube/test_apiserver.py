"""The test API server against the official client, sync and asyncio: the protocol the other tests lean on."""

import datetime
from typing import Any

import anyio
import pytest
import urllib3
from kubernetes import client as sync_client
from kubernetes import watch as sync_watch
from kubernetes.aio import client as aio_client
from kubernetes.client.exceptions import ApiException

from tests.kube import MCPSERVERS, FakeApi, mcpserver, watching

pytestmark = pytest.mark.anyio


def custom(api: FakeApi) -> sync_client.CustomObjectsApi:
    return sync_client.CustomObjectsApi(sync_client.ApiClient(sync_client.Configuration(host=api.url)))


def test_the_official_client_creates_reads_replaces_patches_and_deletes_an_mcpserver(api: FakeApi) -> None:
    objects = custom(api)
    created: Any = objects.create_namespaced_custom_object(*MCPSERVERS[:2], "muster", MCPSERVERS[2], mcpserver("a"))
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    listing: Any = objects.list_namespaced_custom_object(*MCPSERVERS[:2], "muster", MCPSERVERS[2])
    assert [i["metadata"]["name"] for i in listing["items"]] == ["a"]
    assert int(listing["metadata"]["resourceVersion"]) >= int(created["metadata"]["resourceVersion"])

    created["spec"]["timeout"] = 5
    replaced: Any = objects.replace_namespaced_custom_object(*MCPSERVERS[:2], "muster", MCPSERVERS[2], "a", created)
    assert replaced["metadata"]["generation"] == 2 and replaced["spec"]["timeout"] == 5

    merged: Any = objects.patch_namespaced_custom_object(
        *MCPSERVERS[:2], "muster", MCPSERVERS[2], "a", {"spec": {"toolPrefix": "x"}}
    )
    assert merged["metadata"]["generation"] == 3 and merged["spec"]["toolPrefix"] == "x"
    patched: Any = objects.patch_namespaced_custom_object(
        *MCPSERVERS[:2],
        "muster",
        MCPSERVERS[2],
        "a",
        [{"op": "replace", "path": "/spec/timeout", "value": 7}],
        _content_type="application/json-patch+json",
    )
    assert patched["spec"]["timeout"] == 7 and patched["metadata"]["generation"] == 4

    labelled: Any = objects.patch_namespaced_custom_object(
        *MCPSERVERS[:2], "muster", MCPSERVERS[2], "a", {"metadata": {"labels": {"team": "x"}}}
    )
    assert labelled["metadata"]["generation"] == 4, "a metadata change does not bump the generation"

    objects.delete_namespaced_custom_object(*MCPSERVERS[:2], "muster", MCPSERVERS[2], "a")
    with pytest.raises(ApiException) as missing:
        objects.get_namespaced_custom_object(*MCPSERVERS[:2], "muster", MCPSERVERS[2], "a")
    assert missing.value.status == 404


def test_status_goes_through_its_subresource_only_and_a_stale_version_is_a_conflict(api: FakeApi) -> None:
    objects = custom(api)
    created: Any = objects.create_namespaced_custom_object(
        *MCPSERVERS[:2], "muster", MCPSERVERS[2], {**mcpserver("a"), "status": {"state": "Connected"}}
    )
    assert "status" not in created, "status is not taken on create"
    ignored: Any = objects.patch_namespaced_custom_object(
        *MCPSERVERS[:2], "muster", MCPSERVERS[2], "a", {"status": {"state": "Failed"}}
    )
    assert "status" not in ignored and ignored["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

    body = {**created, "status": {"state": "Connected"}, "spec": {**created["spec"], "timeout": 9}}
    written: Any = objects.replace_namespaced_custom_object_status(*MCPSERVERS[:2], "muster", MCPSERVERS[2], "a", body)
    assert written["status"] == {"state": "Connected"}
    assert "timeout" not in written["spec"] and written["metadata"]["generation"] == 1

    with pytest.raises(ApiException) as stale:
        objects.replace_namespaced_custom_object_status(*MCPSERVERS[:2], "muster", MCPSERVERS[2], "a", body)
    assert stale.value.status == 409
    with pytest.raises(ApiException) as stale_patch:
        objects.patch_namespaced_custom_object_status(
            *MCPSERVERS[:2],
            "muster",
            MCPSERVERS[2],
            "a",
            {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "status": {"state": "Failed"}},
        )
    assert stale_patch.value.status == 409
    assert api.count("update", "/mcpservers/a/status") == 2


async def test_a_watch_replays_from_its_version_then_follows_with_bookmarks(api: FakeApi) -> None:
    api.faults(bookmark_seconds=0.2)
    async with aio_client.ApiClient(aio_client.Configuration(host=api.url)) as http:
        objects = aio_client.CustomObjectsApi(http)
        listing: Any = await objects.list_cluster_custom_object(*MCPSERVERS)
        api.create(mcpserver("a"))
        api.create(mcpserver("b"), namespace="other")
        api.patch_spec("a", {"timeout": 3})
        api.delete("a")
        seen: list[tuple[str, str]] = []
        with anyio.fail_after(10):
            async with watching(
                objects.list_cluster_custom_object,
                *MCPSERVERS,
                resource_version=listing["metadata"]["resourceVersion"],
                allow_watch_bookmarks=True,
                timeout_seconds=5,
            ) as events:
                async for event in events:
                    seen.append((event["type"], event["raw_object"]["metadata"].get("name", "")))
                    if event["type"] == "BOOKMARK":
                        break
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "a"), ("BOOKMARK", "")]


async def test_a_watch_from_before_the_kept_history_is_gone_as_an_event_and_as_http_410(api: FakeApi) -> None:
    api.create(mcpserver("a"))
    old = api.stats()["rv"] - 1
    api.create(mcpserver("b"))
    api.faults(compact=True)
    async with aio_client.ApiClient(aio_client.Configuration(host=api.url)) as http:
        objects = aio_client.CustomObjectsApi(http)
        for fault in ({}, {"watch_gone_http": 1}):
            api.faults(**fault)
            with anyio.fail_after(10), pytest.raises(aio_client.ApiException) as gone:
                async with watching(
                    objects.list_namespaced_custom_object,
                    *MCPSERVERS[:2],
                    "muster",
                    MCPSERVERS[2],
                    resource_version=str(old),
                    timeout_seconds=5,
                ) as events:
                    async for _ in events:
                        pass
            assert gone.value.status == 410


def test_a_watch_cut_mid_event_fails_in_the_client_and_rules_fail_or_slow_requests(api: FakeApi) -> None:
    objects = custom(api)
    w = sync_watch.Watch()  # type: ignore[no-untyped-call]
    stream = w.stream(  # type: ignore[no-untyped-call]
        objects.list_namespaced_custom_object, *MCPSERVERS[:2], "muster", MCPSERVERS[2], resource_version="1"
    )
    api.create(mcpserver("a"))
    assert next(stream)["type"] == "ADDED"
    api.faults(cut_watches=True, partial=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        next(stream)

    api.faults(rules=[{"verb": "list", "status": 503, "count": 1}])
    with pytest.raises(ApiException) as failed:
        objects.list_namespaced_custom_object(*MCPSERVERS[:2], "muster", MCPSERVERS[2])
    assert failed.value.status == 503
    again: Any = objects.list_namespaced_custom_object(*MCPSERVERS[:2], "muster", MCPSERVERS[2])
    assert again["items"]


def test_leases_are_created_once_and_replaced_only_from_the_current_version(api: FakeApi) -> None:
    leases = sync_client.CoordinationV1Api(sync_client.ApiClient(sync_client.Configuration(host=api.url)))
    now = datetime.datetime.now(datetime.UTC)
    lease = sync_client.V1Lease(
        metadata=sync_client.V1ObjectMeta(name="l"),
        spec=sync_client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=10, renew_time=now),
    )
    created = leases.create_namespaced_lease("muster", lease)
    with pytest.raises(ApiException) as twice:
        leases.create_namespaced_lease("muster", lease)
    assert twice.value.status == 409
    assert created.spec is not None
    created.spec.holder_identity = "b"
    renewed = leases.replace_namespaced_lease("l", "muster", created)
    assert renewed.spec is not None
    assert renewed.spec.holder_identity == "b" and renewed.spec.renew_time == now
    with pytest.raises(ApiException) as stale:
        leases.replace_namespaced_lease("l", "muster", created)
    assert stale.value.status == 409


def test_secrets_are_read_by_name(api: FakeApi) -> None:
    core = sync_client.CoreV1Api(sync_client.ApiClient(sync_client.Configuration(host=api.url)))
    core.create_namespaced_secret(
        "muster", sync_client.V1Secret(metadata=sync_client.V1ObjectMeta(name="s"), data={"k": "dg=="})
    )
    assert core.read_namespaced_secret("s", "muster").data == {"k": "dg=="}
