"""pytest fixtures for the Kubernetes API stand-in, the kubeconfig writer and `KubeletSim`.

Use them from a test module (no conftest needed). Import every fixture in the chain you use
(`kube_client` needs `kubeconfig`, which needs `kube_api`): pytest looks fixtures up by name in
the module. Ruff then reports the test parameters as F811 (redefinition of the import), hence
the file-level noqa:

    # ruff: noqa: F811
    from tests.support.kubeapi.fixtures import kube_api, kubeconfig  # noqa: F401

    async def test_something(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
        ...  # the code under test loads `kubeconfig`; assertions read kube_api.store

A root conftest may instead list `pytest_plugins = ["tests.support.kubeapi.fixtures"]` (not a
test module: it would import the module before pytest can rewrite its asserts, a warning that
this project's `filterwarnings = error` turns into a collection error).

- `kube_api`: a started `KubeAPIServer` per test, stopped at teardown (which fails the test if
  the stand-in itself crashed on a request: `internal_errors`).
- `kubeconfig`: `tmp_path/kubeconfig` pointing at it (namespace "default").
- `kube_client`: a kubernetes_asyncio `ApiClient` loaded from that kubeconfig (closed after).
- `kubelet_sim`: a running `KubeletSim` (ReplicaSets become ready at once, no Pods).

`KubeletSim` plays the ReplicaSet controller and the kubelet: for every ReplicaSet it sets
`status.replicas`, `readyReplicas`, `availableReplicas` (and `fullyLabeledReplicas`,
`observedGeneration`) to `spec.replicas`, after `delay` seconds, writing through the store like
a real controller (new resourceVersion, MODIFIED event). Zero counts are omitted, as in the real
JSON (`readyReplicas` is absent, not 0). With `create_pods=True` it also keeps that many Pods
per ReplicaSet (template labels, a controller ownerReference, `spec.nodeName`, phase Running, a
Ready condition, a running containerStatus per container). `ready(rs) -> bool` makes chosen
ReplicaSets never become ready (their Pods stay unready); after changing it call `resync()`.

What a kubelet reports about containers, for tests that make their own Pods:
`start_containers(store, ns, pod)` (every container running, with a containerID) and
`restart_container(store, ns, pod, container)` (the instance exits and a new one runs: its log
becomes the `previous=true` one). Logs are written with `store.append_log`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from .resources import ApiError
from .server import KubeAPIServer
from .storage import Obj, Store

__all__ = [
    "NODE_NAME",
    "KubeletSim",
    "kube_api",
    "kube_client",
    "kubeconfig",
    "kubelet_sim",
    "restart_container",
    "start_containers",
    "write_kubeconfig",
]

_RESYNC = object()
NODE_NAME = "kubelet-sim"  # the node KubeletSim's Pods are bound to


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_id() -> str:
    return f"containerd://{secrets.token_hex(32)}"


def _running(name: str, image: str, ready: bool, restarts: int = 0, last: Obj | None = None) -> Obj:
    entry: Obj = {"name": name, "state": {"running": {"startedAt": _now()}}, "lastState": last or {}}
    entry.update(ready=ready, restartCount=restarts, image=image, imageID="", containerID=_container_id())
    entry["started"] = True
    return entry


def start_containers(store: Store, namespace: str, pod: str, *, ready: bool = True) -> Obj:
    """The kubelet started every container of `pod` (which must have spec.nodeName): each runs
    with a fresh containerID, so `store.append_log` can write to it."""
    obj = store.read("pods", namespace, pod)
    containers = (obj.get("spec") or {}).get("containers") or []
    statuses = [_running(c["name"], c.get("image", ""), ready) for c in containers]
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    status = {**(obj.get("status") or {}), "phase": "Running", "containerStatuses": statuses}
    status["conditions"] = [condition]
    return store.put_status("pods", namespace, pod, status)


def restart_container(
    store: Store, namespace: str, pod: str, container: str, *, exit_code: int = 1, reason: str = "Error"
) -> Obj:
    """`container` exited with `exit_code` and the kubelet started it again: the old instance is
    `lastState.terminated` (its log is what `previous=true` reads), restartCount goes up, and a
    follower of the old instance sees its stream end."""
    obj = store.read("pods", namespace, pod)
    status = dict(obj.get("status") or {})
    statuses = [dict(s) for s in status.get("containerStatuses") or []]
    for i, entry in enumerate(statuses):
        if entry.get("name") == container:
            started = ((entry.get("state") or {}).get("running") or {}).get("startedAt", _now())
            terminated = {"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": _now()}
            terminated["containerID"] = entry.get("containerID", "")
            restarts = int(entry.get("restartCount", 0)) + 1
            last = {"terminated": terminated}
            statuses[i] = _running(container, str(entry.get("image", "")), bool(entry.get("ready")), restarts, last)
            break
    else:
        raise KeyError(f'pod "{pod}" has no status for container "{container}" (start_containers first)')
    status["containerStatuses"] = statuses
    return store.put_status("pods", namespace, pod, status)


def write_kubeconfig(server: KubeAPIServer, path: str | Path, namespace: str = "default") -> Path:
    """A kubeconfig file for `server` (plain http server URL, a bearer-token user)."""
    return server.write_kubeconfig(path, namespace=namespace)


class KubeletSim:
    """Marks ReplicaSets ready (and optionally runs their Pods) in a `KubeAPIServer`."""

    def __init__(
        self,
        server: KubeAPIServer,
        *,
        delay: float = 0.0,
        create_pods: bool = False,
        ready: Callable[[Obj], bool] | None = None,
        namespace: str | None = None,
    ) -> None:
        self.server, self.store = server, server.store
        self.delay, self.create_pods, self.ready, self.namespace = delay, create_pods, ready, namespace
        self.errors: list[BaseException] = []
        self._queue: asyncio.Queue[Any] | None = None
        self._future: concurrent.futures.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> Self:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._future = self.server.submit(self._run(started))
        started.result(timeout=5)
        return self

    def stop(self) -> None:
        if self._future is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the server's loop already stopped
                self._loop.call_soon_threadsafe(self._future.cancel)
            with contextlib.suppress(concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
                self._future.result(timeout=5)
        self._future = None

    def resync(self) -> None:
        """Reconcile every ReplicaSet again (e.g. after changing `ready`)."""
        if self._loop is not None and self._queue is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, _RESYNC)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _run(self, started: concurrent.futures.Future[None]) -> None:
        loop = self._loop = asyncio.get_running_loop()
        queue = self._queue = asyncio.Queue()
        pending: set[tuple[str, str]] = set()
        tasks: set[asyncio.Task[None]] = set()

        def schedule(obj: Obj) -> None:
            key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            if key not in pending:
                pending.add(key)
                task = loop.create_task(self._later(key, pending))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        def deliver(event: Obj) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        sub = self.store.watch("replicasets", self.namespace, deliver)
        started.set_result(None)
        try:
            while True:
                item = await queue.get()
                if item is _RESYNC:
                    for rs in self.store.list("replicasets", self.namespace):
                        schedule(rs)
                elif item["type"] in ("ADDED", "MODIFIED"):
                    schedule(item["object"])
        finally:
            self.store.unwatch(sub)
            for task in list(tasks):
                task.cancel()

    async def _later(self, key: tuple[str, str], pending: set[tuple[str, str]]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        pending.discard(key)
        try:
            self.reconcile(*key)
        except (ApiError, ValueError, KeyError, TypeError) as exc:
            self.errors.append(exc)

    def reconcile(self, namespace: str, name: str) -> None:
        """Bring one ReplicaSet's status (and Pods) in line with its spec now."""
        rs = self.store.get("replicasets", namespace, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        desired = int((rs.get("spec") or {}).get("replicas", 1))
        ready = self.ready(rs) if self.ready is not None else True
        if self.create_pods:
            self._sync_pods(rs, desired, ready)
        status = dict(rs.get("status") or {})
        count = desired if ready else 0
        status.update(replicas=desired, fullyLabeledReplicas=desired, readyReplicas=count, availableReplicas=count)
        status["observedGeneration"] = rs["metadata"].get("generation", 1)
        for key in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
            if not status[key]:
                del status[key]  # omitempty, as the real server's JSON
        self.store.put_status("replicasets", namespace, name, status)

    def _sync_pods(self, rs: Obj, desired: int, ready: bool) -> None:
        meta = rs["metadata"]
        ns, uid = meta.get("namespace", "default"), meta["uid"]
        owned = [
            p
            for p in self.store.list("pods", ns)
            if any(ref.get("uid") == uid for ref in p["metadata"].get("ownerReferences") or [])
        ]
        owned.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
        template = (rs.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        while len(owned) < desired:
            ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": meta["name"], "uid": uid}
            ref.update(controller=True, blockOwnerDeletion=True)
            pod_meta = {"generateName": f"{meta['name']}-", "labels": dict(tmeta.get("labels") or {})}
            pod_meta.update(annotations=dict(tmeta.get("annotations") or {}), ownerReferences=[ref])
            spec = {**(template.get("spec") or {}), "nodeName": NODE_NAME}  # bound, as by the scheduler
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}
            owned.append(self.store.create("pods", body, ns))
        for pod in owned[desired:]:
            with contextlib.suppress(ApiError):
                self.store.delete("pods", ns, pod["metadata"]["name"])
        for pod in owned[:desired]:
            old = pod.get("status") or {}
            ip = old.get("podIP") or f"10.244.{random.randint(0, 255)}.{random.randint(1, 254)}"
            condition = {"type": "Ready", "status": "True" if ready else "False"}
            statuses = [dict(c) for c in old.get("containerStatuses") or []]
            if not statuses:  # started once; later passes only follow readiness
                containers = (pod.get("spec") or {}).get("containers") or []
                statuses = [_running(c["name"], c.get("image", ""), ready) for c in containers]
            for entry in statuses:
                entry["ready"] = ready
            status = {**old, "phase": "Running", "podIP": ip, "conditions": [condition]}
            status["containerStatuses"] = statuses
            self.store.put_status("pods", ns, pod["metadata"]["name"], status)


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def kube_api() -> Iterator[KubeAPIServer]:
    server = KubeAPIServer().start()
    try:
        yield server
    finally:
        server.stop()
    if server.internal_errors:
        raise AssertionError(f"the Kubernetes API stand-in failed internally: {server.internal_errors!r}")


@pytest.fixture
def kubeconfig(kube_api: KubeAPIServer, tmp_path: Path) -> Path:
    return write_kubeconfig(kube_api, tmp_path / "kubeconfig")


@pytest.fixture
async def kube_client(kubeconfig: Path) -> AsyncIterator[Any]:
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration=configuration) as api:
        yield api


@pytest.fixture
def kubelet_sim(kube_api: KubeAPIServer) -> Iterator[KubeletSim]:
    with KubeletSim(kube_api) as sim:
        yield sim
