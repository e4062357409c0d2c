"""The Kubernetes store's cache when the watch is ahead of a write's answer.

The store puts what a write returns into the informer cache (so that the next reconcile reads
its own write). The answer of a write and the watch events travel on different connections: on
a busy client the watch can deliver the write's event, and what others wrote next (the kubelet's
status, a user's edit, a delete), before the write's answer is read. The late answer must then
not replace the newer object (or bring a deleted one back): nothing else would correct the
cache, and the controller would wait for a change it has already missed (the ReplicaSet it
created never looks ready). `hold_next` makes the stand-in withhold an answer until released.
"""

# ruff: noqa: F811
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rollouts.platform.kubernetes.api import KubeApi, load_api_client
from rollouts.platform.kubernetes.store import KubeStore
from tests.kubernetes.test_store_scope import until
from tests.support.kubeapi.fixtures import kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer

Obj = dict[str, Any]


def replica_set(name: str) -> Obj:
    labels = {"app": "web", "rollouts-pod-template-hash": "abc"}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "web:v1"}]}},
        },
    }


def rollout(name: str) -> Obj:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": name}}, "replicas": 1},
    }


def version(obj: Obj | None) -> int:
    assert obj is not None
    return int(obj["metadata"]["resourceVersion"])


@pytest.fixture
async def store(kubeconfig: Path) -> AsyncIterator[KubeStore]:
    api = KubeApi(await load_api_client(str(kubeconfig)))
    kube = KubeStore(api)
    try:
        await kube.start(timeout=20)
        yield kube
    finally:
        await kube.stop()
        await api.close()


async def test_a_late_create_answer_does_not_hide_the_status_written_after_it(
    kube_api: KubeAPIServer, store: KubeStore
) -> None:
    release = kube_api.hold_next("POST", r"/replicasets$")
    creating = asyncio.ensure_future(store.create(replica_set("web-abc")))
    # The kubelet's part, once the ReplicaSet exists: its status, at a later resourceVersion.
    await until(lambda: kube_api.store.get("replicasets", "default", "web-abc") is not None, "the create")
    ready = kube_api.store.put_status("replicasets", "default", "web-abc", {"replicas": 2, "readyReplicas": 2})
    await until(lambda: version(store.get("ReplicaSet", "web-abc") or ready) == version(ready), "the watch")
    release.set()
    created = await creating

    assert version(created) < version(ready)
    cached = store.get("ReplicaSet", "web-abc")
    assert cached is not None and cached["status"].get("readyReplicas") == 2, cached
    assert version(cached) == version(ready)


async def test_a_late_update_answer_does_not_hide_a_later_edit(kube_api: KubeAPIServer, store: KubeStore) -> None:
    kube_api.store.create("rollouts", rollout("web"))
    await until(lambda: store.get("Rollout", "web") is not None, "the rollout in the cache")
    current = store.get("Rollout", "web")
    assert current is not None
    current["status"] = {"phase": "Healthy"}
    release = kube_api.hold_next("PUT", r"/rollouts/web/status$")
    writing = asyncio.ensure_future(store.update_status(current))
    await until(lambda: (kube_api.store.read("rollouts", "default", "web").get("status") or {}) != {}, "the write")
    edited = kube_api.store.read("rollouts", "default", "web")
    edited["spec"]["replicas"] = 3  # kubectl's edit, right after the controller's write
    edited = kube_api.store.update("rollouts", edited, "default")
    await until(lambda: (store.get("Rollout", "web") or {})["spec"]["replicas"] == 3, "the edit on the watch")
    release.set()
    await writing

    cached = store.get("Rollout", "web")
    assert cached is not None
    assert cached["spec"]["replicas"] == 3 and cached["status"] == {"phase": "Healthy"}, cached


async def test_a_late_update_answer_does_not_bring_back_a_deleted_object(
    kube_api: KubeAPIServer, store: KubeStore
) -> None:
    kube_api.store.create("replicasets", replica_set("web-abc"))
    await until(lambda: store.get("ReplicaSet", "web-abc") is not None, "the ReplicaSet in the cache")
    current = store.get("ReplicaSet", "web-abc")
    assert current is not None
    current["spec"]["replicas"] = 0
    release = kube_api.hold_next("PUT", r"/replicasets/web-abc$")
    writing = asyncio.ensure_future(store.update(current))
    await until(
        lambda: kube_api.store.read("replicasets", "default", "web-abc")["spec"]["replicas"] == 0, "the scale-down"
    )
    kube_api.store.delete("replicasets", "default", "web-abc")
    await until(lambda: store.get("ReplicaSet", "web-abc") is None, "the delete on the watch")
    release.set()
    await writing

    assert store.get("ReplicaSet", "web-abc") is None


async def test_an_answer_read_before_the_watch_event_is_cached_at_once(
    kube_api: KubeAPIServer, store: KubeStore
) -> None:
    """The usual order (answer first): the next read sees the write before its watch event comes."""
    created = await store.create(replica_set("web-abc"))
    cached = store.get("ReplicaSet", "web-abc")
    assert cached is not None and version(cached) == version(created)
