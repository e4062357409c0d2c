"""Watch semantics: resourceVersion replay, selectors, 410 Expired, bookmarks, timeouts, broken streams."""

# ruff: noqa: F811  (test parameters named after the imported pytest fixtures)

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.kubeapi import DEFAULT_TOKEN, KubeAPIServer
from tests.support.kubeapi.fixtures import kube_api, kube_client, kubeconfig  # noqa: F401  (pytest fixtures)

ARGO = ("argoproj.io", "v1alpha1")
MERGE: dict[str, Any] = {"_content_type": "application/merge-patch+json"}  # not in the stubs
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}


def rollout(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta = {"name": name, "labels": labels or {}}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": meta, "spec": {"replicas": 1}}


async def collect(stream: Any, count: int) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of the first `count` events."""
    seen: list[tuple[str, str, str]] = []
    async for event in stream:
        meta = event["raw_object"]["metadata"]
        seen.append((event["type"], meta.get("name", ""), meta["resourceVersion"]))
        if len(seen) == count:
            break
    return seen


@pytest.fixture
def small_api(tmp_path: Path) -> Iterator[tuple[KubeAPIServer, Path]]:
    """A server keeping only 5 watch events and sending bookmarks every 0.1 s."""
    with KubeAPIServer(history_limit=5, bookmark_interval=0.1) as api:
        yield api, api.write_kubeconfig(tmp_path / "small-kubeconfig")


async def test_watch_from_a_resource_version_sees_every_change_in_order(
    kube_api: KubeAPIServer, kube_client: Any
) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(10):
        listed = await custom.list_namespaced_custom_object(*ARGO, "default", "rollouts")
        start = listed["metadata"]["resourceVersion"]
        # Before the watch opens (replayed from history) ...
        await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout("a"))
        await custom.patch_namespaced_custom_object(
            *ARGO, "default", "rollouts", "a", {"spec": {"replicas": 2}}, **MERGE
        )
        async with watch.Watch() as w:
            stream = w.stream(
                custom.list_namespaced_custom_object,
                *ARGO,
                "default",
                "rollouts",
                resource_version=start,
                timeout_seconds=10,
            )
            events = asyncio.ensure_future(collect(stream, 5))
            await kube_api.async_wait_for_watches(1, "rollouts")
            # ... and after it (live).
            await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout("b"))
            await custom.delete_namespaced_custom_object(*ARGO, "default", "rollouts", "a")
            await custom.create_namespaced_custom_object(*ARGO, "kube-system", "rollouts", rollout("elsewhere"))
            await custom.patch_namespaced_custom_object_status(
                *ARGO, "default", "rollouts", "b", {"status": {"phase": "Healthy"}}, **MERGE
            )
            seen = await events
    assert [(t, n) for t, n, _ in seen] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
        ("MODIFIED", "b"),
    ]
    rvs = [int(rv) for _, _, rv in seen]
    assert rvs == sorted(rvs) and len(set(rvs)) == 5  # DELETED carries the deletion's own resourceVersion


async def test_watch_without_resource_version_starts_with_the_current_objects(kube_client: Any) -> None:
    core: Any = client.CoreV1Api(kube_client)
    async with asyncio.timeout(5):
        for name in ("a", "b"):
            await core.create_namespaced_config_map("default", {"metadata": {"name": name}})
        async with watch.Watch() as w:
            events = []
            async for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=10):
                events.append(event)
                if len(events) == 2:
                    break
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "a"), ("ADDED", "b")]
    assert isinstance(events[0]["object"], client.V1ConfigMap)  # typed, as for a real server


async def test_label_selector_watch_sees_objects_enter_and_leave(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(10):
        made = await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout("a"))
        async with watch.Watch() as w:
            stream = w.stream(
                custom.list_namespaced_custom_object,
                *ARGO,
                "default",
                "rollouts",
                label_selector="app=web",
                resource_version=made["metadata"]["resourceVersion"],
                timeout_seconds=10,
            )
            events = asyncio.ensure_future(collect(stream, 3))
            await kube_api.async_wait_for_watches(1)
            for labels in ({"app": "web"}, {"app": "web", "x": "1"}, {"app": "db"}, {"app": "db", "x": "2"}):
                await custom.patch_namespaced_custom_object(
                    *ARGO, "default", "rollouts", "a", {"metadata": {"labels": labels}}, **MERGE
                )
            seen = await events
    assert [t for t, _, _ in seen] == ["ADDED", "MODIFIED", "DELETED"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        # A controller without an instance id: objects without the label.
        pytest.param("!argo-rollouts.argoproj.io/controller-instance-id", ["DELETED", "ADDED"], id="not-exists"),
        # A controller with one: objects with the label set to its id.
        pytest.param("argo-rollouts.argoproj.io/controller-instance-id=blue", ["ADDED", "DELETED"], id="equals"),
    ],
)
async def test_instance_id_selectors_on_list_and_watch(
    kube_api: KubeAPIServer, kube_client: Any, selector: str, expected: list[str]
) -> None:
    key = "argo-rollouts.argoproj.io/controller-instance-id"
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(10):
        await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout("plain"))
        labelled = rollout("blue")
        labelled["metadata"]["labels"] = {key: "blue"}
        await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", labelled)
        listed = await custom.list_namespaced_custom_object(*ARGO, "default", "rollouts", label_selector=selector)
        async with watch.Watch() as w:
            stream = w.stream(
                custom.list_namespaced_custom_object,
                *ARGO,
                "default",
                "rollouts",
                label_selector=selector,
                resource_version=listed["metadata"]["resourceVersion"],
                timeout_seconds=10,
            )
            events = asyncio.ensure_future(collect(stream, 2))
            await kube_api.async_wait_for_watches(1)
            # "plain" takes the label (leaves the first selector), then "blue" drops it (enters it).
            for name, labels in (("plain", {key: "blue"}), ("blue", {key: None})):
                await custom.patch_namespaced_custom_object(
                    *ARGO, "default", "rollouts", name, {"metadata": {"labels": labels}}, **MERGE
                )
            seen = await events
    names = [item["metadata"]["name"] for item in listed["items"]]
    assert names == (["plain"] if selector.startswith("!") else ["blue"])
    assert [t for t, _, _ in seen] == expected
    assert [n for _, n, _ in seen] == ["plain", "blue"]


async def test_watch_from_an_expired_resource_version_gets_410(kube_api: KubeAPIServer, kube_client: Any) -> None:
    core: Any = client.CoreV1Api(kube_client)
    async with asyncio.timeout(10):
        made = await core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
        old = made.metadata.resource_version
        kube_api.expire_history()
        # kubernetes_asyncio turns the ERROR event into ApiException(status=410).
        async with watch.Watch() as w:
            with pytest.raises(ApiException) as bounded:
                async for _ in w.stream(
                    core.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=5
                ):
                    pass
        # Watching "forever" (no timeout_seconds), it retries once from the same RV, then raises.
        kube_api.clear_requests()
        async with watch.Watch() as w:
            with pytest.raises(ApiException) as forever:
                async for _ in w.stream(core.list_namespaced_config_map, "default", resource_version=old):
                    pass
        retried = [r.query.get("resourceVersion") for r in kube_api.requests if r.query.get("watch")]
        # On the wire: 200, one ERROR event carrying a Status, end of stream.
        async with httpx.AsyncClient(base_url=kube_api.url, headers=AUTH) as raw:
            resp = await raw.get("/api/v1/namespaces/default/configmaps", params={"watch": "1", "resourceVersion": old})
        # A fresh list gives a resourceVersion that can be watched from again.
        fresh = (await core.list_namespaced_config_map("default")).metadata.resource_version
        await core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
        async with watch.Watch() as w:
            stream = w.stream(core.list_namespaced_config_map, "default", resource_version=fresh, timeout_seconds=10)
            resumed = await collect(stream, 1)
    assert bounded.value.status == 410 and "Expired: too old resource version" in str(bounded.value.reason)
    assert forever.value.status == 410
    assert retried == [old, old]
    assert resp.status_code == 200
    lines = resp.text.strip().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    assert {k: event["object"][k] for k in ("kind", "status", "reason", "code")} == {
        "kind": "Status",
        "status": "Failure",
        "reason": "Expired",
        "code": 410,
    }
    assert [(t, n) for t, n, _ in resumed] == [("ADDED", "b")]


async def test_history_is_bounded(small_api: tuple[KubeAPIServer, Path]) -> None:
    api, path = small_api
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    async with asyncio.timeout(10), client.ApiClient(configuration) as ac:
        core: Any = client.CoreV1Api(ac)
        first = await core.create_namespaced_config_map("default", {"metadata": {"name": "cm-0"}})
        for i in range(1, 10):
            await core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
        async with watch.Watch() as w:
            with pytest.raises(ApiException) as too_old:
                async for _ in w.stream(
                    core.list_namespaced_config_map,
                    "default",
                    resource_version=first.metadata.resource_version,
                    timeout_seconds=10,
                ):
                    pass
        recent = str(api.store.resource_version - 3)
        async with watch.Watch() as w:
            stream = w.stream(core.list_namespaced_config_map, "default", resource_version=recent, timeout_seconds=10)
            seen = await collect(stream, 3)
    assert too_old.value.status == 410
    assert [n for _, n, _ in seen] == ["cm-7", "cm-8", "cm-9"]


async def test_bookmarks(small_api: tuple[KubeAPIServer, Path]) -> None:
    api, path = small_api
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    async with asyncio.timeout(10), client.ApiClient(configuration) as ac:
        custom: Any = client.CustomObjectsApi(ac)
        await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout("a"))
        async with watch.Watch() as w:
            stream = w.stream(
                custom.list_namespaced_custom_object,
                *ARGO,
                "default",
                "rollouts",
                allow_watch_bookmarks=True,
                timeout_seconds=5,
            )
            seen = await collect(stream, 2)
            resume_from = w.resource_version
    assert seen[0][:2] == ("ADDED", "a")
    assert seen[1][0] == "BOOKMARK" and seen[1][2] == str(api.store.resource_version)
    assert resume_from == seen[1][2]  # kubernetes_asyncio resumes from the bookmark


async def test_timeout_seconds_ends_the_stream(kube_api: KubeAPIServer, kube_client: Any) -> None:
    core: Any = client.CoreV1Api(kube_client)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        started = loop.time()
        async with watch.Watch() as w:
            events = [e async for e in w.stream(core.list_namespaced_pod, "default", timeout_seconds=1)]
        elapsed = loop.time() - started
    assert events == [] and 0.9 < elapsed < 3
    assert kube_api.open_watches() == 0


async def test_break_watches_abruptly(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(10):
        async with watch.Watch() as w:
            stream = w.stream(custom.list_namespaced_custom_object, *ARGO, "default", "rollouts", timeout_seconds=30)
            consumer = asyncio.ensure_future(collect(stream, 1))
            await kube_api.async_wait_for_watches(1)
            assert await asyncio.to_thread(kube_api.break_watches) == 1
            # An interrupted chunked stream surfaces from aiohttp, not as a Kubernetes error.
            with pytest.raises(aiohttp.ClientPayloadError):
                await consumer
    assert kube_api.open_watches() == 0


async def test_break_watches_gracefully_and_resume(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(10):
        # With timeout_seconds, a cleanly ended stream just ends the iteration.
        async with watch.Watch() as w:
            stream = w.stream(custom.list_namespaced_custom_object, *ARGO, "default", "rollouts", timeout_seconds=30)
            consumer = asyncio.ensure_future(collect(stream, 1))
            await kube_api.async_wait_for_watches(1)
            await asyncio.to_thread(kube_api.break_watches, graceful=True)
            assert await consumer == []
        # Without it, kubernetes_asyncio reconnects from the last resourceVersion it saw.
        await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout("a"))
        async with watch.Watch() as w:
            stream = w.stream(custom.list_namespaced_custom_object, *ARGO, "default", "rollouts")
            consumer = asyncio.ensure_future(collect(stream, 2))
            await kube_api.async_wait_for_watches(1)
            await asyncio.sleep(0.05)  # let the initial ADDED through
            await asyncio.to_thread(kube_api.break_watches, graceful=True)
            await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout("b"))
            seen = await consumer
    assert [(t, n) for t, n, _ in seen] == [("ADDED", "a"), ("ADDED", "b")]
    watches = [r for r in kube_api.requests if r.query.get("watch")]
    assert watches[-1].query["resourceVersion"] == seen[0][2]


async def test_a_client_leaving_closes_its_watch(kube_api: KubeAPIServer, kube_client: Any) -> None:
    core: Any = client.CoreV1Api(kube_client)
    async with asyncio.timeout(5):
        async with watch.Watch() as w:
            consumer = asyncio.ensure_future(collect(w.stream(core.list_namespaced_pod, "default"), 1))
            await kube_api.async_wait_for_watches(1)
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
        while kube_api.open_watches():
            await asyncio.sleep(0.01)
    assert kube_api.store.watcher_count == 0
