"""The runtime's incremental Service sync (kube-proxy's role): after any sequence of writes,
every Service's routing table is the one computed from scratch (all pods, all Services), while
a pod or Service change recomputes only the Services concerned and lists no Service.

Pods are not processes here: a fake supervisor hands out statuses, and tests flip readiness
through `on_pod_change`, as the real supervisor does. The proxy is a recorder."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from rollouts.core.hashing import HASH_LABEL
from rollouts.platform.embedded import objects
from rollouts.platform.embedded import runtime as runtime_module
from rollouts.platform.embedded.pods import PodPhase, PodStatus, PodSupervisor
from rollouts.platform.embedded.podspec import PodSpec
from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.routing import Backend, RevisionBackends, RoutingTable
from rollouts.platform.embedded.runtime import EmbeddedRuntime
from rollouts.store.sqlite import SqliteStore


class FakeSupervisor:
    def __init__(self) -> None:
        self.ports = itertools.count(20000)

    async def start_pod(self, spec: PodSpec) -> PodStatus:
        return PodStatus(
            name=spec.name,
            phase=PodPhase.RUNNING,
            ready=False,
            host="127.0.0.1",
            port=next(self.ports),
            pids=(),
            restarts=0,
            started_at=0.0,
            ready_since=None,
            exit_code=None,
            message="",
        )

    async def stop_pod(self, name: str) -> None:
        return None

    async def close(self) -> None:
        return None

    async def detach(self) -> None:
        return None


class RecordingProxy:
    def __init__(self) -> None:
        self.tables: dict[str, RoutingTable] = {}
        self.listening: dict[str, int] = {}
        self.swaps: list[str] = []

    async def add_service(self, name: str, port: int, host: str = "127.0.0.1") -> int:
        self.listening[name] = port
        return port

    async def remove_service(self, name: str) -> None:
        self.listening.pop(name, None)
        self.tables.pop(name, None)

    def set_routing(self, name: str, table: RoutingTable) -> None:
        self.tables[name] = table
        self.swaps.append(name)

    async def close(self) -> None:
        return None


@pytest.fixture
async def host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[EmbeddedRuntime, RecordingProxy]]:
    monkeypatch.setattr(runtime_module, "DRAIN_SECONDS", 0.0)
    monkeypatch.setattr(runtime_module, "FEED_POLL_SECONDS", 0.01)
    store = SqliteStore(tmp_path / "state.db")
    proxy = RecordingProxy()
    runtime = EmbeddedRuntime(
        store, tmp_path / "state.d", cast(ProxyServer, proxy), cast(PodSupervisor, FakeSupervisor())
    )
    store.add_listener(runtime.on_store_change)
    await runtime.start()
    try:
        yield runtime, proxy
    finally:
        await runtime.close()
        store.close()


async def settle(runtime: EmbeddedRuntime) -> None:
    """Until the runtime's loop has nothing left to do (bounded: a few hundred loop turns)."""
    for _ in range(500):
        await asyncio.sleep(0)
        idle = not (runtime._wake.is_set() or runtime._dirty_rs or runtime._dirty_services or runtime._dirty_pods)
        if (
            idle
            and not runtime._routes_dirty
            and all(t.get_name().startswith("embedded-runtime") for t in runtime._background)
        ):
            return
    raise AssertionError("the runtime did not settle")


def replica_set(name: str, labels: dict[str, str], replicas: int, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "app", "command": ["run"]}]},
            },
        },
    }


def service(
    name: str,
    selector: dict[str, str],
    port: int,
    *,
    weight: int = 0,
    canary: str | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    notes = {objects.CANARY_WEIGHT_ANNOTATION: str(weight)}
    if canary:
        notes[objects.CANARY_HASH_ANNOTATION] = canary
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": notes},
        "spec": {"selector": selector, "ports": [{"port": port}]},
    }


def from_scratch(runtime: EmbeddedRuntime, svc: dict[str, Any]) -> RoutingTable:
    """The routing table as the runtime computed it before it was incremental: every pod
    looked at, for a Service read now."""

    def backends(namespace: str, selector: dict[str, str]) -> RevisionBackends:
        found = []
        for pod, (ns, _rs, labels) in sorted(runtime._pod_meta.items()):
            status = runtime._pods.get(pod)
            if ns != namespace or pod in runtime._draining or not objects.selector_matches(selector, labels):
                continue
            if status is not None and status.ready:
                found.append(Backend(pod=pod, host=status.host, port=status.port))
        return RevisionBackends(revision=selector.get(HASH_LABEL, "none"), backends=tuple(found))

    namespace = svc["metadata"].get("namespace", "default")
    selector = dict(svc["spec"].get("selector") or {})
    notes = objects.annotations_of(svc)
    weight = int(notes.get(objects.CANARY_WEIGHT_ANNOTATION, "0") or 0)
    canary_hash = notes.get(objects.CANARY_HASH_ANNOTATION)
    canary = backends(namespace, {**selector, HASH_LABEL: canary_hash}) if canary_hash and weight > 0 else None
    return RoutingTable(primary=backends(namespace, selector), canary=canary, canary_weight=weight if canary else 0)


def assert_consistent(runtime: EmbeddedRuntime, proxy: RecordingProxy) -> None:
    services = runtime.store.list("Service")
    keys = {
        s["metadata"]["name"] if s["metadata"]["namespace"] == "default" else "team/" + s["metadata"]["name"]
        for s in services
    }
    assert set(proxy.listening) == keys
    for svc in services:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        key = name if ns == "default" else f"{ns}/{name}"
        assert proxy.tables[key] == from_scratch(runtime, svc), key


def set_ready(runtime: EmbeddedRuntime, pod: str, ready: bool) -> None:
    runtime.on_pod_change(dataclasses.replace(runtime._pods[pod], ready=ready))


async def test_random_writes_route_as_a_full_recompute_would(host: tuple[EmbeddedRuntime, RecordingProxy]) -> None:
    runtime, proxy = host
    store = runtime.store
    rng = random.Random(5)
    hashes = ["h1", "h2", "h3"]
    for ns in ("default", "team"):
        for h in hashes:
            store.create(replica_set(f"web-{h}", {"app": "web", HASH_LABEL: h}, 2, ns))
        store.create(replica_set("api-h1", {"app": "api", HASH_LABEL: "h1"}, 1, ns))
    port = itertools.count(8000)
    store.create(service("web", {"app": "web", HASH_LABEL: "h1"}, next(port), weight=30, canary="h2"))
    store.create(service("web-canary", {"app": "web", HASH_LABEL: "h2"}, next(port)))
    store.create(service("web-any", {"app": "web"}, next(port)))  # unpinned: any hash
    store.create(service("api", {"app": "api"}, next(port)))
    store.create(service("web", {"app": "web", HASH_LABEL: "h3"}, next(port), namespace="team"))
    await settle(runtime)
    assert_consistent(runtime, proxy)

    for _step in range(300):
        action = rng.choice(["ready", "ready", "unready", "weight", "repin", "relabel", "scale", "service"])
        pods = sorted(runtime._pods)
        if action in ("ready", "unready") and pods:
            set_ready(runtime, rng.choice(pods), action == "ready")
        elif action == "weight":
            store.mutate(
                "Service",
                "web",
                None,
                lambda o: o["metadata"]["annotations"].update(
                    {objects.CANARY_WEIGHT_ANNOTATION: str(rng.choice([0, 20, 100]))}
                ),
            )
        elif action == "repin":
            stable, canary = rng.sample(hashes, 2)

            def repin(o: dict[str, Any], stable: str = stable, canary: str = canary) -> None:
                o["spec"]["selector"][HASH_LABEL] = stable
                o["metadata"]["annotations"][objects.CANARY_HASH_ANNOTATION] = canary

            store.mutate("Service", "web", None, repin)
        elif action == "relabel" and pods:
            pod = rng.choice(pods)
            meta = runtime._pod_meta.get(pod)
            if meta is not None:
                role = rng.choice(["a", "b"])
                store.mutate("Pod", pod, meta[0], functools.partial(_set_labels, labels={"role": role}))
        elif action == "scale":
            ns, rs = rng.choice(["default", "team"]), f"web-{rng.choice(hashes)}"
            n = rng.choice([0, 1, 3])
            store.mutate("ReplicaSet", rs, ns, functools.partial(_set_replicas, replicas=n))
        elif action == "service":
            if store.get("Service", "web-role") is None:
                store.create(service("web-role", {"app": "web", "role": "a"}, next(port)))
            else:
                store.delete("Service", "web-role")
        await settle(runtime)
        assert_consistent(runtime, proxy)


async def test_a_pod_change_recomputes_only_the_services_selecting_it(
    host: tuple[EmbeddedRuntime, RecordingProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, proxy = host
    store = runtime.store
    for i in range(20):
        store.create(replica_set(f"app{i}-h{i}", {"app": f"app{i}", HASH_LABEL: f"h{i}"}, 1))
        store.create(service(f"app{i}", {"app": f"app{i}", HASH_LABEL: f"h{i}"}, 9000 + i))
    store.create(service("all", {}, 8999))  # unpinned, selects every pod
    await settle(runtime)
    listed: list[str] = []
    original = store.list

    def recording_list(kind: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        listed.append(kind)
        return original(kind, *args, **kwargs)

    monkeypatch.setattr(store, "list", recording_list)
    proxy.swaps.clear()

    pod = next(p for p, meta in runtime._pod_meta.items() if meta[1] == "app7-h7")
    set_ready(runtime, pod, True)
    await settle(runtime)

    assert sorted(proxy.swaps) == ["all", "app7"]
    assert [b.pod for b in primary_of(proxy.tables["app7"]).backends] == [pod]
    assert "Service" not in listed
    proxy.swaps.clear()
    store.mutate("Service", "app3", None, lambda o: o["metadata"]["annotations"].update({"note": "x"}))
    await settle(runtime)
    assert proxy.swaps == ["app3"]
    assert "Service" not in listed


async def test_a_service_written_by_another_process_is_routed(
    host: tuple[EmbeddedRuntime, RecordingProxy], tmp_path: Path
) -> None:
    _runtime, proxy = host
    other = SqliteStore(tmp_path / "state.db")  # the CLI: its writes reach no in-process listener
    try:
        other.create(service("cli", {"app": "cli"}, 9100))
        for _ in range(200):
            if "cli" in proxy.listening:
                break
            await asyncio.sleep(0.01)
        assert proxy.listening.get("cli") == 9100
        other.delete("Service", "cli")
        for _ in range(200):
            if "cli" not in proxy.listening:
                break
            await asyncio.sleep(0.01)
        assert "cli" not in proxy.listening
    finally:
        other.close()


async def test_canary_and_relabelled_pods_reach_the_services_that_route_to_them(
    host: tuple[EmbeddedRuntime, RecordingProxy],
) -> None:
    runtime, proxy = host
    store = runtime.store
    store.create(replica_set("web-h1", {"app": "web", HASH_LABEL: "h1"}, 1))
    store.create(replica_set("web-h2", {"app": "web", HASH_LABEL: "h2"}, 1))
    store.create(service("web", {"app": "web", HASH_LABEL: "h1"}, 8000, weight=25, canary="h2"))
    store.create(service("web-preview", {"app": "web", "role": "preview"}, 8001))
    await settle(runtime)
    stable, canary = (next(p for p, m in runtime._pod_meta.items() if m[1] == rs) for rs in ("web-h1", "web-h2"))
    set_ready(runtime, stable, True)
    set_ready(runtime, canary, True)
    await settle(runtime)
    table = proxy.tables["web"]
    assert [b.pod for b in primary_of(table).backends] == [stable]
    assert table.canary is not None and [b.pod for b in table.canary.backends] == [canary]
    assert table.canary_weight == 25

    store.mutate("Pod", canary, None, lambda o: o["metadata"]["labels"].update({"role": "preview"}))
    await settle(runtime)
    assert [b.pod for b in primary_of(proxy.tables["web-preview"]).backends] == [canary]
    store.mutate("Pod", canary, None, lambda o: o["metadata"]["labels"].update({"role": "gone"}))
    await settle(runtime)
    assert primary_of(proxy.tables["web-preview"]).backends == ()

    set_ready(runtime, canary, False)  # not ready: out of the canary side at once
    await settle(runtime)
    table = proxy.tables["web"]
    assert table.canary is not None and table.canary.backends == ()
    assert_consistent(runtime, proxy)


def _set_labels(obj: dict[str, Any], labels: dict[str, str]) -> None:
    obj["metadata"]["labels"].update(labels)


def _set_replicas(obj: dict[str, Any], replicas: int) -> None:
    obj["spec"]["replicas"] = replicas


def primary_of(table: RoutingTable) -> RevisionBackends:
    assert table.primary is not None
    return table.primary
