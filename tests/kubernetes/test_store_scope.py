"""The Kubernetes store's scope (namespace, instance id) and its Event recorder, against the API stand-in.

The store runs in the test's process; the stand-in is reached through a kubeconfig as a cluster
would be. Assertions read the informer caches (what the controller sees), the stand-in's
objects and its request log (what was asked of the API server).
"""

# ruff: noqa: F811
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from rollouts.model.scope import INSTANCE_ID_LABEL
from rollouts.platform.kubernetes.api import KubeApi, load_api_client
from rollouts.platform.kubernetes.store import KubeStore
from tests.support.kubeapi.fixtures import kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer

Obj = dict[str, Any]


def rollout(name: str, namespace: str = "default", instance: str | None = None) -> Obj:
    labels = {INSTANCE_ID_LABEL: instance} if instance else {}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": name}}},
    }


def analysis_run(name: str, instance: str | None = None) -> Obj:
    labels = {INSTANCE_ID_LABEL: instance} if instance else {}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"metrics": []},
    }


def service(name: str, namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    }


async def until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[KubeApi]:
    client = KubeApi(await load_api_client(str(kubeconfig)))
    try:
        yield client
    finally:
        await client.close()


async def started(store: KubeStore) -> KubeStore:
    await store.start(timeout=20)
    return store


def names(store: KubeStore, kind: str) -> list[tuple[str, str]]:
    return store.names(kind)


# --- namespace ---------------------------------------------------------------------------------


async def test_a_namespaced_store_lists_and_watches_only_its_namespace(kube_api: KubeAPIServer, api: KubeApi) -> None:
    for ns in ("team-a", "team-b"):
        kube_api.store.create("namespaces", {"metadata": {"name": ns}})
        kube_api.store.create("rollouts", rollout("web", ns), ns)
        kube_api.store.create("services", service("web", ns), ns)
    kube_api.store.create(
        "clusteranalysistemplates",
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "ClusterAnalysisTemplate", "metadata": {"name": "shared"}},
    )
    kube_api.clear_requests()
    store = await started(KubeStore(api, "team-a"))
    try:
        assert names(store, "Rollout") == [("team-a", "web")]
        assert names(store, "Service") == [("team-a", "web")]
        assert names(store, "ClusterAnalysisTemplate") == [("", "shared")]
        kube_api.store.create("rollouts", rollout("api", "team-b"), "team-b")
        kube_api.store.create("rollouts", rollout("api", "team-a"), "team-a")
        await until(lambda: ("team-a", "api") in names(store, "Rollout"), "team-a's new rollout")
        assert ("team-b", "api") not in names(store, "Rollout")
        await store.create(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "made"}, "spec": {"ports": [{"port": 1}]}}
        )
        assert kube_api.store.get("services", "team-a", "made") is not None, "created in the store's namespace"
    finally:
        await store.stop()
    paths = [r.path for r in kube_api.requests]
    assert paths, "the store asked nothing"
    assert not [p for p in paths if "/namespaces/team-b/" in p]
    cluster_wide = [p for p in paths if "/namespaces/" not in p]
    assert cluster_wide == ["/apis/argoproj.io/v1alpha1/clusteranalysistemplates"] * len(cluster_wide)
    assert cluster_wide, "ClusterAnalysisTemplates are listed cluster-wide"


async def test_forbidden_cluster_templates_do_not_stop_a_namespaced_store(
    kube_api: KubeAPIServer, api: KubeApi
) -> None:
    """RBAC for one namespace only (a Role, no ClusterRole): ClusterAnalysisTemplates cannot be listed."""
    kube_api.store.create("rollouts", rollout("web"))
    kube_api.fail_next("GET", r"/clusteranalysistemplates$", 403, times=1000, message="forbidden at cluster scope")
    store = KubeStore(api, "default")
    try:
        async with asyncio.timeout(10):
            await store.start(timeout=10)
        assert names(store, "Rollout") == [("default", "web")]
        assert names(store, "ClusterAnalysisTemplate") == []
        assert store.informers["ClusterAnalysisTemplate"].forbidden
        assert not store.informers["Rollout"].forbidden
    finally:
        await store.stop()


async def test_a_forbidden_namespaced_kind_still_stops_the_start(kube_api: KubeAPIServer, api: KubeApi) -> None:
    kube_api.fail_next("GET", r"/namespaces/default/rollouts$", 403, times=1000)
    store = KubeStore(api, "default")
    try:
        with pytest.raises(TimeoutError):
            await store.start(timeout=1)
    finally:
        await store.stop()


# --- instance id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance", "seen"),
    [
        pytest.param("blue", ["blue-web"], id="with-id-only-labelled"),
        pytest.param(None, ["plain-web"], id="without-id-only-unlabelled"),
    ],
)
async def test_an_instance_store_sees_only_its_rollouts_and_runs(
    kube_api: KubeAPIServer, api: KubeApi, instance: str | None, seen: list[str]
) -> None:
    kube_api.store.create("rollouts", rollout("blue-web", instance="blue"))
    kube_api.store.create("rollouts", rollout("green-web", instance="green"))
    kube_api.store.create("rollouts", rollout("plain-web"))
    for obj in (analysis_run("blue-run", "blue"), analysis_run("plain-run")):
        kube_api.store.create("analysisruns", obj)
    kube_api.store.create("services", service("svc", "default"))
    store = await started(KubeStore(api, instance_id=instance))
    try:
        assert [name for _, name in names(store, "Rollout")] == seen
        assert [name for _, name in names(store, "AnalysisRun")] == ["blue-run" if instance else "plain-run"]
        assert names(store, "Service") == [("default", "svc")], "other kinds are not filtered"
    finally:
        await store.stop()
    selectors = {r.query.get("labelSelector") for r in kube_api.requests if "/rollouts" in r.path}
    assert selectors == {f"{INSTANCE_ID_LABEL}=blue" if instance else f"!{INSTANCE_ID_LABEL}"}


async def test_a_relabelled_rollout_leaves_and_enters_the_caches(kube_api: KubeAPIServer, api: KubeApi) -> None:
    kube_api.store.create("rollouts", rollout("web"))
    blue = await started(KubeStore(api, instance_id="blue"))
    plain = await started(KubeStore(api))
    try:
        assert names(plain, "Rollout") == [("default", "web")] and names(blue, "Rollout") == []
        moved = kube_api.store.read("rollouts", "default", "web")
        moved["metadata"]["labels"] = {INSTANCE_ID_LABEL: "blue"}
        kube_api.store.update("rollouts", moved, "default")
        await until(lambda: names(blue, "Rollout") == [("default", "web")], "the blue store to see it")
        await until(lambda: names(plain, "Rollout") == [], "the plain store to drop it")
    finally:
        await blue.stop()
        await plain.stop()


async def test_a_write_that_leaves_the_selector_leaves_the_cache(kube_api: KubeAPIServer, api: KubeApi) -> None:
    kube_api.store.create("analysisruns", analysis_run("run", "blue"))
    store = await started(KubeStore(api, instance_id="blue"))
    try:
        raw = store.get("AnalysisRun", "run")
        assert raw is not None
        raw["metadata"]["labels"] = {INSTANCE_ID_LABEL: "green"}
        await store.update(raw)
        assert store.get("AnalysisRun", "run") is None, "no longer this controller's"
    finally:
        await store.stop()


# --- events --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def events(api: KubeAPIServer) -> list[Obj]:
    return sorted(api.store.list("events", "default"), key=lambda e: (e["reason"], e["message"], e["count"]))


async def test_a_repeated_event_counts_on_one_event(kube_api: KubeAPIServer, api: KubeApi) -> None:
    kube_api.store.create("rollouts", rollout("web"))
    clock = Clock()
    store = await started(KubeStore(api, clock=clock, event_window=600))
    try:
        for _ in range(3):
            await store.record_event("Rollout", "web", "default", "Warning", "Flaky", "probe failed")
            clock.now += 100
        (one,) = events(kube_api)
        assert (one["count"], one["reason"], one["message"]) == (3, "Flaky", "probe failed")
        assert one["involvedObject"]["uid"] == kube_api.store.read("rollouts", "default", "web")["metadata"]["uid"]
        assert one["lastTimestamp"] >= one["firstTimestamp"]
        patches = [r for r in kube_api.requests if r.method == "PATCH" and "/events/" in r.path]
        assert len(patches) == 2, "each repeat is one patch of the Event"

        await store.record_event("Rollout", "web", "default", "Warning", "Flaky", "probe failed again")
        await store.record_event("Rollout", "web", "default", "Normal", "Other", "probe failed")
        assert [(e["reason"], e["message"], e["count"]) for e in events(kube_api)] == [
            ("Flaky", "probe failed", 3),
            ("Flaky", "probe failed again", 1),
            ("Other", "probe failed", 1),
        ], "another message or reason is another Event"

        clock.now += 601  # past the window since the last occurrence: a new Event
        await store.record_event("Rollout", "web", "default", "Warning", "Flaky", "probe failed")
        flaky = [e for e in events(kube_api) if (e["reason"], e["message"]) == ("Flaky", "probe failed")]
        assert sorted(e["count"] for e in flaky) == [1, 3]
    finally:
        await store.stop()


async def test_an_event_changed_or_deleted_meanwhile_is_read_again_or_written_anew(
    kube_api: KubeAPIServer, api: KubeApi
) -> None:
    kube_api.store.create("rollouts", rollout("web"))
    store = await started(KubeStore(api))
    try:
        await store.record_event("Rollout", "web", "default", "Normal", "Ping", "once")
        (event,) = events(kube_api)
        event["count"] = 5  # someone else wrote the Event since: our resourceVersion is stale
        kube_api.store.update("events", event, "default")
        await store.record_event("Rollout", "web", "default", "Normal", "Ping", "once")
        (event,) = events(kube_api)
        assert event["count"] == 6, "a conflict reads the Event again and counts on"

        kube_api.store.delete("events", "default", event["metadata"]["name"])
        await store.record_event("Rollout", "web", "default", "Normal", "Ping", "once")
        (fresh,) = events(kube_api)
        assert fresh["count"] == 1 and fresh["metadata"]["name"] != event["metadata"]["name"]
    finally:
        await store.stop()


async def test_concurrent_repeats_are_all_counted(kube_api: KubeAPIServer, api: KubeApi) -> None:
    kube_api.store.create("rollouts", rollout("web"))
    store = await started(KubeStore(api))
    try:
        await store.record_event("Rollout", "web", "default", "Normal", "Ping", "hello")
        await asyncio.gather(
            *(store.record_event("Rollout", "web", "default", "Normal", "Ping", "hello") for _ in range(4))
        )
        (event,) = events(kube_api)
        assert event["count"] == 5
    finally:
        await store.stop()
