"""Owner-reference garbage collection, namespace deletion, the fault/request hooks and KubeletSim."""

# ruff: noqa: F811  (test parameters named after the imported pytest fixtures)

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.kubeapi import DEFAULT_TOKEN, KubeAPIServer, KubeletSim
from tests.support.kubeapi.fixtures import kube_api, kube_client, kubeconfig, kubelet_sim  # noqa: F401  (pytest fixtures)

ARGO = ("argoproj.io", "v1alpha1")
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}


def status_of(exc: ApiException) -> dict[str, Any]:
    """The Status object the server answered with (kubernetes_asyncio keeps the raw body)."""
    parsed: dict[str, Any] = json.loads(exc.body or b"{}")
    return parsed


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def replicaset(name: str, owner: dict[str, Any] | None = None, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": "web", "rollouts-pod-template-hash": name}
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [owner_ref(owner)]
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}
    spec = {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta, "spec": spec}


def tree(api: KubeAPIServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rollout web → ReplicaSet web-1 → Pod web-1-a, plus AnalysisRun web-run owned by the Rollout."""
    store = api.store
    ro = store.create(
        "rollouts", {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"}}, "default"
    )
    rs = store.create("replicasets", replicaset("web-1", ro), "default")
    run_meta = {"name": "web-run", "ownerReferences": [owner_ref(ro)]}
    run = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun", "metadata": run_meta}
    store.create("analysisruns", run, "default")
    pod = {"metadata": {"name": "web-1-a", "ownerReferences": [owner_ref(rs)]}, "spec": {"containers": []}}
    store.create("pods", pod, "default")
    return ro, rs


def remaining(api: KubeAPIServer) -> set[str]:
    return {
        f"{kind}/{o['metadata']['name']}"
        for kind in ("rollouts", "replicasets", "analysisruns", "pods")
        for o in api.store.list(kind, "default")
    }


async def test_background_deletion_collects_dependents(kube_api: KubeAPIServer, kube_client: Any) -> None:
    tree(kube_api)
    async with asyncio.timeout(5):
        await client.CustomObjectsApi(kube_client).delete_namespaced_custom_object(
            *ARGO, "default", "rollouts", "web", propagation_policy="Background"
        )
    assert remaining(kube_api) == set()


async def test_foreground_deletion_removes_dependents_first(kube_api: KubeAPIServer, kube_client: Any) -> None:
    tree(kube_api)
    seen: list[tuple[str, str]] = []
    for kind in ("rollouts", "replicasets", "pods"):
        kube_api.store.watch(
            kind,
            "default",
            lambda e: seen.append((e["type"], e["object"]["metadata"]["name"])),
            since=str(kube_api.store.resource_version),
        )
    async with asyncio.timeout(5):
        custom: Any = client.CustomObjectsApi(kube_client)
        # DeleteOptions in the body, as client-go sends them.
        await custom.delete_namespaced_custom_object(
            *ARGO, "default", "rollouts", "web", body={"propagationPolicy": "Foreground"}
        )
    assert remaining(kube_api) == set()
    assert seen[0] == ("MODIFIED", "web")  # deletionTimestamp + the foregroundDeletion finalizer
    assert seen[-1] == ("DELETED", "web")
    assert seen.index(("DELETED", "web-1-a")) < seen.index(("DELETED", "web-1")) < seen.index(("DELETED", "web"))


async def test_orphan_deletion_keeps_dependents_without_the_reference(
    kube_api: KubeAPIServer, kube_client: Any
) -> None:
    tree(kube_api)
    async with asyncio.timeout(5):
        await client.CustomObjectsApi(kube_client).delete_namespaced_custom_object(
            *ARGO, "default", "rollouts", "web", propagation_policy="Orphan"
        )
    assert remaining(kube_api) == {"replicasets/web-1", "analysisruns/web-run", "pods/web-1-a"}
    rs = kube_api.store.get("replicasets", "default", "web-1")
    assert rs is not None and "ownerReferences" not in rs["metadata"]


async def test_jobs_orphan_their_pods_by_default(kube_api: KubeAPIServer, kube_client: Any) -> None:
    job_body: Any = {"metadata": {"name": "migrate"}, "spec": {"template": {"spec": {"containers": []}}}}
    async with asyncio.timeout(5):
        job = await client.BatchV1Api(kube_client).create_namespaced_job("default", job_body)
        ref = {"apiVersion": "batch/v1", "kind": "Job", "name": "migrate", "uid": job.metadata.uid}
        kube_api.store.create("pods", {"metadata": {"name": "migrate-x", "ownerReferences": [ref]}}, "default")
        await client.BatchV1Api(kube_client).delete_namespaced_job("migrate", "default")
    assert kube_api.store.get("pods", "default", "migrate-x") is not None


def test_a_dependent_with_another_live_owner_survives(kube_api: KubeAPIServer) -> None:
    store = kube_api.store
    a = store.create("configmaps", {"metadata": {"name": "a"}}, "default")
    b = store.create("configmaps", {"metadata": {"name": "b"}}, "default")
    refs = [{**owner_ref(a), "controller": False}, {**owner_ref(b), "controller": False}]
    store.create("secrets", {"metadata": {"name": "shared", "ownerReferences": refs}}, "default")
    store.delete("configmaps", "default", "a")
    shared = store.get("secrets", "default", "shared")
    assert shared is not None and [r["name"] for r in shared["metadata"]["ownerReferences"]] == ["b"]
    store.delete("configmaps", "default", "b")
    assert store.get("secrets", "default", "shared") is None


async def test_deleting_a_namespace_deletes_its_objects(kube_api: KubeAPIServer, kube_client: Any) -> None:
    core: Any = client.CoreV1Api(kube_client)
    async with asyncio.timeout(5):
        await core.create_namespace({"metadata": {"name": "team-a"}})
        await core.create_namespaced_config_map("team-a", {"metadata": {"name": "cm"}})
        await core.delete_namespace("team-a")
        with pytest.raises(ApiException) as gone:
            await core.create_namespaced_config_map("team-a", {"metadata": {"name": "cm"}})
    assert gone.value.status == 404
    assert kube_api.store.list("configmaps", "team-a") == []


async def test_fail_next_injects_errors(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"}}
    kube_api.fail_next("POST", r"/rollouts$", 500)
    kube_api.fail_next("PUT", r"/rollouts/web$", 409, times=2)
    kube_api.fail_next("*", r"/rollouts", 429, watch=True)
    async with asyncio.timeout(5):
        with pytest.raises(ApiException) as internal:
            await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", body)
        made = await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", body)
        conflicts: list[ApiException | None] = []
        for _ in range(3):
            try:
                await custom.replace_namespaced_custom_object(*ARGO, "default", "rollouts", "web", made)
                conflicts.append(None)
            except ApiException as exc:
                conflicts.append(exc)
        async with watch.Watch() as w:
            with pytest.raises(ApiException) as throttled:
                async for _ in w.stream(
                    custom.list_namespaced_custom_object, *ARGO, "default", "rollouts", timeout_seconds=5
                ):
                    pass
    assert internal.value.status == 500 and status_of(internal.value)["reason"] == "InternalError"
    assert [e.status if e else None for e in conflicts] == [409, 409, None]
    first = conflicts[0]
    assert first is not None
    assert status_of(first)["message"].startswith('Operation cannot be fulfilled on rollouts.argoproj.io "web"')
    # A failed watch request: kubernetes_asyncio reads the Status from the body (no headers kept).
    assert throttled.value.status == 429 and "TooManyRequests" in str(throttled.value.reason)


def test_fail_next_throttling_carries_retry_after(kube_api: KubeAPIServer) -> None:
    kube_api.fail_next("GET", r"^/api/v1/namespaces$", 429, retry_after=3)
    with httpx.Client(base_url=kube_api.url, headers=AUTH, timeout=5) as raw:
        throttled = raw.get("/api/v1/namespaces")
        ok = raw.get("/api/v1/namespaces")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    assert throttled.json()["reason"] == "TooManyRequests"
    assert throttled.json()["details"] == {"retryAfterSeconds": 3}
    assert ok.status_code == 200


def test_request_log(kube_api: KubeAPIServer) -> None:
    with httpx.Client(base_url=kube_api.url, headers=AUTH, timeout=5) as raw:
        raw.get("/api/v1/namespaces/default/pods", params={"labelSelector": "app=web"})
        raw.delete("/api/v1/namespaces/default/pods/missing")
    assert kube_api.requests == [
        ("GET", "/api/v1/namespaces/default/pods", {"labelSelector": "app=web"}),
        ("DELETE", "/api/v1/namespaces/default/pods/missing", {}),
    ]
    kube_api.clear_requests()
    assert kube_api.requests == []


async def test_kubelet_sim_marks_replicasets_ready(
    kube_api: KubeAPIServer, kube_client: Any, kubelet_sim: KubeletSim
) -> None:
    apps: Any = client.AppsV1Api(kube_client)
    async with asyncio.timeout(5):
        await apps.create_namespaced_replica_set("default", replicaset("web-1", replicas=3))
        async with watch.Watch() as w:
            async for event in w.stream(apps.list_namespaced_replica_set, "default", timeout_seconds=5):
                if (event["object"].status.ready_replicas or 0) == 3:
                    break
        await apps.patch_namespaced_replica_set_scale("web-1", "default", {"spec": {"replicas": 0}})
        while (await apps.read_namespaced_replica_set_status("web-1", "default")).status.replicas != 0:
            await asyncio.sleep(0.01)
        rs = await apps.read_namespaced_replica_set("web-1", "default")
    status = kube_api.store.get("replicasets", "default", "web-1")
    assert status is not None
    assert status["status"] == {"replicas": 0, "observedGeneration": 2}  # zero counts omitted, as on a cluster
    assert rs.status.available_replicas is None
    assert kubelet_sim.errors == []


def test_kubelet_sim_runs_pods_with_a_delay_and_a_readiness_rule(kube_api: KubeAPIServer) -> None:
    store = kube_api.store
    with KubeletSim(kube_api, delay=0.05, create_pods=True, ready=lambda rs: rs["metadata"]["name"] != "bad") as sim:
        store.create("replicasets", replicaset("good", replicas=2), "default")
        store.create("replicasets", replicaset("bad", replicas=1), "default")
        wait_for(lambda: len(store.list("pods", "default")) == 3)
        wait_for(
            lambda: (store.get("replicasets", "default", "good") or {}).get("status", {}).get("readyReplicas") == 2
        )
        wait_for(lambda: (store.get("replicasets", "default", "bad") or {}).get("status", {}).get("replicas") == 1)
        bad = store.get("replicasets", "default", "bad")
        assert bad is not None and "readyReplicas" not in bad["status"]
        pods = {p["metadata"]["name"]: p for p in store.list("pods", "default")}
        good_pod = next(p for n, p in pods.items() if n.startswith("good-"))
        assert good_pod["metadata"]["labels"]["app"] == "web"
        assert good_pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert good_pod["status"]["phase"] == "Running" and good_pod["status"]["conditions"][0]["status"] == "True"
        sim.ready = None
        sim.resync()
        wait_for(lambda: (store.get("replicasets", "default", "bad") or {}).get("status", {}).get("readyReplicas") == 1)
        store.delete("replicasets", "default", "good")  # Pods go with it (owner GC)
        assert sorted(p["metadata"]["name"][:4] for p in store.list("pods", "default")) == ["bad-"]
        assert sim.errors == []


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)
