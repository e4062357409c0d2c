"""The embedded runtime: makes local processes and proxy routes match the store.

It plays kubelet and kube-proxy for the embedded platform. ReplicaSet objects say how many
pods of a revision should run; the runtime starts and stops pods (processes, through
`PodSupervisor`), mirrors them as Pod objects, and keeps each ReplicaSet's ready/available
counts current. Service objects become proxy listeners; their selector (with the
pod-template hash the controller pins) and the canary annotations become routing tables.

Routing is recomputed from in-memory pod state on every relevant change, so a weight change
written by the controller reaches the proxy within one event-loop turn. Only the Services
concerned are recomputed: one whose object was written, and those whose selector (or canary
hash) selects a pod that became ready, unready, draining or relabelled, found through an index
by pod-template hash. Listing and decoding every Service on each write was O(rollouts) per
write on the shared loop. A pod being removed leaves the routing table first and is stopped
after a short drain.

Crash safety: pod processes outlive the controller (they run in their own sessions). Each Pod
object records, per container, the PID, the process start time and the port
(`status.containerStatuses`); a runtime starting on a state file adopts the pods still alive
(see `_adopt_previous_pods`), so a controller killed with `kill -9` and started again (or a
follower taking the lease over) serves on with the same processes and never runs two sets.
Every container process carries its pod's UID in `ROLLOUTS_POD_UID`, which finds the rare
process started but not yet recorded when the controller died.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rollouts.core.hashing import HASH_LABEL
from rollouts.core.routes import ActiveRoute, RouteFormatError, routes_from_json
from rollouts.core.timeutil import parse_rfc3339, to_rfc3339
from rollouts.model.pod import PodTemplateSpec
from rollouts.platform.embedded import objects, probespec
from rollouts.platform.embedded.dataplane import DataPlane
from rollouts.platform.embedded.platform import RESTART_REQUESTED_ANNOTATION
from rollouts.platform.embedded.pods import (
    ContainerProcess,
    PodEvent,
    PodStatus,
    PodSupervisor,
    find_session_leaders,
    process_is,
)
from rollouts.platform.embedded.podspec import ContainerSpec, PodSpec
from rollouts.platform.embedded.routing import Backend, RevisionBackends, RoutingTable
from rollouts.store.sqlite import Change, SqliteStore
from rollouts.tasks import stop_task, stop_tasks

log = logging.getLogger(__name__)

DRAIN_SECONDS = 1.0
POD_UID_ENV = "ROLLOUTS_POD_UID"
# How often Services written by other processes (the CLI) are looked for: in-process writes
# arrive at once through the store's listener.
FEED_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class _ServiceRouting:
    """What a Service's routing table is computed from, kept so that a pod change recomputes
    the table without reading the Service again."""

    namespace: str
    selector: dict[str, str]
    weight: int
    canary_hash: str | None
    routes: str | None  # the managed-routes annotation, parsed by `_managed_routes`

    def selects(self, labels: dict[str, str]) -> bool:
        """Whether a pod with `labels` can be a backend of this Service (primary or canary)."""
        if objects.selector_matches(self.selector, labels):
            return True
        return bool(self.canary_hash) and objects.selector_matches(
            {**self.selector, HASH_LABEL: str(self.canary_hash)}, labels
        )

    def hashes(self) -> set[str | None]:
        """The pod-template hashes it is indexed under; None: it selects pods of any hash."""
        pinned = self.selector.get(HASH_LABEL)
        found: set[str | None] = {pinned}
        if self.canary_hash:
            found.add(self.canary_hash)
        return found


class EmbeddedRuntime:
    def __init__(
        self,
        store: SqliteStore,
        state_dir: Path,
        proxy: DataPlane,
        supervisor: PodSupervisor | None = None,
        *,
        leading: Callable[[], bool] | None = None,
    ) -> None:
        """`leading`, when given, is asked before every sync: while it says False (this
        controller is not sure it still holds the lease) nothing is started, stopped or routed."""
        self.store = store
        self.state_dir = state_dir
        self.supervisor = supervisor or PodSupervisor(on_change=self.on_pod_change, on_event=self.on_pod_event)
        self.proxy = proxy
        self._pods: dict[str, PodStatus] = {}
        self._pod_meta: dict[str, tuple[str, str, dict[str, str]]] = {}  # pod -> (namespace, rs, labels)
        self._draining: set[str] = set()
        self._dirty_rs: set[tuple[str, str]] = set()
        self._restart_checks: set[str] = set()  # pods whose object changed: restart requested?
        self._routes_dirty = False  # every Service is synced (at start; a bind retry)
        self._dirty_services: set[tuple[str, str]] = set()  # (namespace, name): object written
        self._dirty_pods: set[tuple[str, frozenset[tuple[str, str]]]] = set()  # (namespace, labels)
        self._routing: dict[str, _ServiceRouting] = {}  # service key -> what its table comes from
        self._services_by_hash: dict[tuple[str, str | None], set[str]] = {}  # (namespace, hash) -> keys
        self._pods_by_hash: dict[tuple[str, str | None], set[str]] = {}  # (namespace, hash) -> pods
        self._feed_rv = 0
        self._notified: set[int] = set()  # versions of Service writes seen through the listener
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._listening: dict[str, int] = {}
        self._leading = leading
        self._detached = False
        self._bind_retry: asyncio.TimerHandle | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self._adopt_previous_pods()
        for rs in self.store.list("ReplicaSet"):
            self._dirty_rs.add((rs["metadata"]["namespace"], rs["metadata"]["name"]))
        self._routes_dirty = True
        self._feed_rv = self.store.current_rv()  # before the first (full) sync reads the Services
        self._task = asyncio.create_task(self._loop(), name="embedded-runtime")
        self._spawn(self._poll_feed(), "embedded-runtime-feed")
        self._wake.set()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _poll_feed(self) -> None:
        """Services written by other processes (the CLI) reach the runtime through the store's
        change feed (keys only). Before the runtime synced only what changed, any write synced
        every Service, which picked such a Service up at the next write of anything."""
        while True:
            await asyncio.sleep(FEED_POLL_SECONDS)
            try:
                changes, newest = self.store.changes_since(self._feed_rv)
            except Exception:
                log.exception("polling the store for Service changes failed")
                continue
            self._feed_rv = newest
            for change in changes:
                if change.kind == "Service" and change.rv not in self._notified:
                    self._dirty_services.add((change.namespace, change.name))
                    self._wake.set()
            self._notified = {rv for rv in self._notified if rv > newest}

    async def close(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
        if self._bind_retry is not None:
            self._bind_retry.cancel()
        for task in list(self._background):
            task.cancel()
        await self.supervisor.close()
        for name in list(self._pods):
            self.store.delete("Pod", name, self._pod_meta.get(name, ("default", "", {}))[0])
        await self.proxy.close()

    async def detach(self) -> None:
        """Stop acting at once but leave every pod running and recorded, for the next leader to
        adopt (this controller lost its lease). Service listeners are closed."""
        self._detached = True
        if self._bind_retry is not None:
            self._bind_retry.cancel()
        await stop_tasks(t for t in (self._task, *self._background) if t is not None)
        await self.supervisor.detach()
        await self.proxy.close()

    def on_store_change(self, change: Change) -> None:
        """Store listener: note what to re-sync; the loop does the work."""
        if change.kind == "ReplicaSet":
            # Its pods' changes (started, ready, removed) mark the Services that route to them.
            self._dirty_rs.add((change.namespace, change.name))
        elif change.kind == "Service":
            self._dirty_services.add((change.namespace, change.name))
            if self._task is not None:  # the feed poll forgets the versions it has read past
                self._notified.add(change.rv)
        elif change.kind == "Pod" and not change.deleted and change.name in self._pod_meta:
            self._restart_checks.add(change.name)
        else:
            return
        self._wake.set()

    def poke(self) -> None:
        self._routes_dirty = True
        self._wake.set()

    def on_pod_event(self, event: PodEvent) -> None:
        meta = self._pod_meta.get(event.pod)
        if meta is not None and not self._detached:
            self.store.record_event("Pod", event.pod, meta[0], event.type, event.reason, event.message)

    def on_pod_change(self, status: PodStatus) -> None:
        if self._detached:
            return
        previous = self._pods.get(status.name)
        self._pods[status.name] = status
        meta = self._pod_meta.get(status.name)
        if meta is None:
            return
        if (
            previous is None
            or previous.ready != status.ready
            or previous.restarts != status.restarts
            or (previous.host, previous.port) != (status.host, status.port)
        ):
            self._dirty_rs.add((meta[0], meta[1]))
            self._mark_pod(meta[0], meta[2])
            self._wake.set()
        self._write_pod(status)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._leading is not None and not self._leading():
                await asyncio.sleep(0.2)  # not sure we still lead: act on nothing until we are
                self._wake.set()
                continue
            try:
                while self._restart_checks:
                    pod = self._restart_checks.pop()
                    self._follow_labels(pod)
                    self._replace_if_requested(pod)
                while self._dirty_rs:
                    namespace, name = self._dirty_rs.pop()
                    await self._sync_replica_set(namespace, name)
                if self._routes_dirty:
                    self._routes_dirty = False
                    self._dirty_services.clear()
                    self._dirty_pods.clear()
                    await self._sync_services()
                if self._dirty_services or self._dirty_pods:
                    await self._sync_changed_services()
            except Exception:  # the runtime must outlive one bad object
                log.exception("embedded runtime sync failed")
                await asyncio.sleep(0.5)
                self._wake.set()

    # --- pods ------------------------------------------------------------------------------

    async def _adopt_previous_pods(self) -> None:
        """Take over the pods a previous controller left running (it crashed, was killed, or lost
        its lease); called once, before the first sync.

        A recorded container process is ours when its PID is alive *and* started at the
        recorded start time (a PID reused by another process is not, and is never signalled).
        A pod with at least one such process is adopted: supervised again (a container that is
        gone is restarted on its port), probed, and routed to from its recorded host and port.
        A pod with none left is deleted, and the ReplicaSet sync starts a replacement; a pod
        whose ReplicaSet is gone is stopped and deleted. Processes that carry a known pod UID
        but were never recorded (started just before the controller died) are killed first, and
        so are the processes of pods recorded by an older version (`pids` only, no start
        times), found by their `POD_NAME`: those pods are replaced.
        """
        pods = self.store.list("Pod")
        recorded: dict[str, list[ContainerProcess]] = {}
        uids: dict[str, str] = {}
        legacy: dict[str, set[int]] = {}
        ours: set[int] = set()
        for pod in pods:
            name = str(pod["metadata"]["name"])
            uid = str(pod["metadata"].get("uid") or "")
            if uid:
                uids[uid] = name
            records = _container_records(pod)
            recorded[name] = records
            ours.update(r.pid for r in records if r.pid is not None and _alive(r))
            if not records:
                legacy[name] = {int(pid) for pid in (pod.get("status") or {}).get("pids") or []}
        for pid, uid in find_session_leaders(POD_UID_ENV, uids).items():
            if pid not in ours:
                log.warning("pod %s: killing process %d, started but never recorded", uids[uid], pid)
                _kill_group(pid)
        for pid, name in find_session_leaders("POD_NAME", legacy).items():
            if pid in legacy[name]:
                log.warning("pod %s: killing process %d, recorded without its start time", name, pid)
                _kill_group(pid)
        await asyncio.gather(*(self._adopt_or_replace(pod, recorded[str(pod["metadata"]["name"])]) for pod in pods))

    async def _adopt_or_replace(self, pod: dict[str, Any], records: list[ContainerProcess]) -> None:
        try:
            await self._adopt(pod, records)
        except Exception:  # one bad record must not stop the runtime: replace that pod
            name = str(pod["metadata"]["name"])
            log.exception("pod %s: cannot adopt it; stopping it, the ReplicaSet will replace it", name)
            self._drop_meta(name)
            for record in records:
                if record.pid is not None and _alive(record):
                    _kill_group(record.pid)
            with contextlib.suppress(Exception):
                self.store.delete("Pod", name, pod["metadata"].get("namespace"))

    async def _adopt(self, pod: dict[str, Any], records: list[ContainerProcess]) -> None:
        meta = pod["metadata"]
        name = str(meta["name"])
        namespace = str(meta.get("namespace") or "default")
        live = [r for r in records if _alive(r)]
        rs_name = objects.owner_name(pod, "ReplicaSet")
        rs = self.store.get("ReplicaSet", rs_name, namespace) if rs_name else None
        if rs is None or rs_name is None or not live:
            if live:
                log.info("pod %s: its ReplicaSet is gone, stopping it", name)
                for record in live:
                    assert record.pid is not None
                    _kill_group(record.pid)
            else:
                log.info("pod %s: no process left, the ReplicaSet will replace it", name)
            self.store.delete("Pod", name, namespace)
            return
        labels = objects.labels_of(pod)
        try:
            template = PodTemplateSpec.model_validate({"metadata": {"labels": labels}, "spec": pod.get("spec") or {}})
        except ValidationError:
            template = PodTemplateSpec.model_validate(rs["spec"]["template"])
        spec = self._pod_spec(name, str(meta.get("uid") or ""), labels, template)
        started = parse_rfc3339((pod.get("status") or {}).get("startTime"))
        self._set_meta(name, (namespace, rs_name, labels))
        status = await self.supervisor.adopt(
            spec, records, started_at=started.timestamp() if started is not None else time.time()
        )
        log.info("pod %s: adopted (pids %s, port %d)", name, ", ".join(map(str, status.pids)), status.port)
        self.on_pod_change(status)

    def _set_meta(self, pod: str, meta: tuple[str, str, dict[str, str]]) -> None:
        self._drop_meta(pod)
        self._pod_meta[pod] = meta
        self._pods_by_hash.setdefault((meta[0], meta[2].get(HASH_LABEL)), set()).add(pod)

    def _drop_meta(self, pod: str) -> tuple[str, str, dict[str, str]] | None:
        meta = self._pod_meta.pop(pod, None)
        if meta is not None:
            key = (meta[0], meta[2].get(HASH_LABEL))
            pods = self._pods_by_hash.get(key)
            if pods is not None:
                pods.discard(pod)
                if not pods:
                    del self._pods_by_hash[key]
        return meta

    def _mark_pod(self, namespace: str, labels: dict[str, str]) -> None:
        """The pod's routing state changed: the Services selecting it are synced next turn."""
        self._dirty_pods.add((namespace, frozenset(labels.items())))

    def _pods_of(self, namespace: str, rs_name: str) -> list[str]:
        return [
            name
            for name, (ns, rs, _) in self._pod_meta.items()
            if ns == namespace and rs == rs_name and name not in self._draining
        ]

    async def _sync_replica_set(self, namespace: str, name: str) -> None:
        rs = self.store.get("ReplicaSet", name, namespace)
        pods = self._pods_of(namespace, name)
        if rs is None:
            for pod in pods:
                self._remove_pod(pod)
            return
        desired = int(rs["spec"].get("replicas", 0))
        for _ in range(desired - len(pods)):
            await self._start_pod(namespace, rs)
        if len(pods) > desired:
            # Not-ready pods go first, then the newest.
            ranked = sorted(
                pods,
                key=lambda p: (
                    self._pods[p].ready if p in self._pods else False,
                    -(self._pods[p].started_at if p in self._pods else 0.0),
                ),
            )
            for pod in ranked[: len(pods) - desired]:
                self._remove_pod(pod)
        self._write_rs_status(namespace, name, rs)

    async def _start_pod(self, namespace: str, rs: dict[str, Any]) -> None:
        template = PodTemplateSpec.model_validate(rs["spec"]["template"])
        pod_name = f"{rs['metadata']['name']}-{secrets.token_hex(3)[:5]}"
        labels = dict((template.metadata.labels if template.metadata else None) or {})
        # The template's annotations too: ephemeral metadata (core.metadata) puts role annotations there.
        annotations = dict((template.metadata.annotations if template.metadata else None) or {})
        self._set_meta(pod_name, (namespace, rs["metadata"]["name"], labels))
        created = self.store.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": labels,
                    **({"annotations": annotations} if annotations else {}),
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "ReplicaSet",
                            "name": rs["metadata"]["name"],
                            "uid": rs["metadata"].get("uid", ""),
                        }
                    ],
                },
                "spec": rs["spec"]["template"].get("spec", {}),
                "status": {"phase": "Pending", "ready": False},
            }
        )
        spec = self._pod_spec(pod_name, str(created["metadata"].get("uid") or ""), labels, template)
        status = await self.supervisor.start_pod(spec)
        self.on_pod_change(status)

    def _pod_spec(self, pod_name: str, uid: str, labels: dict[str, str], template: PodTemplateSpec) -> PodSpec:
        containers = []
        for c in template.spec.containers:
            env = {e.name: e.value or "" for e in c.env or [] if e.value_from is None}
            env[POD_UID_ENV] = uid
            containers.append(
                ContainerSpec(
                    name=c.name,
                    image=c.image or "",
                    command=tuple(c.command or ()),
                    args=tuple(c.args or ()),
                    env=env,
                    probes=probespec.from_container(c),
                )
            )
        return PodSpec(
            name=pod_name,
            labels=labels,
            containers=tuple(containers),
            log_dir=self.state_dir / "logs",
            termination_grace_seconds=float(template.spec.termination_grace_period_seconds or 5),
        )

    def _follow_labels(self, pod: str) -> None:
        """Route by the Pod object's labels, as kube-proxy does: ephemeral metadata relabels
        running pods (core.metadata), and a Service may select a role label. The runtime never
        writes labels after creating a pod, so it does not undo such a change."""
        meta = self._pod_meta.get(pod)
        if meta is None:
            return
        obj = self.store.get("Pod", pod, meta[0])
        if obj is None:
            return
        labels = objects.labels_of(obj)
        if labels != meta[2]:
            self._set_meta(pod, (meta[0], meta[1], labels))
            self._mark_pod(meta[0], meta[2])  # the Services that selected it, and those that now do
            self._mark_pod(meta[0], labels)

    def _replace_if_requested(self, pod: str) -> None:
        """A pod whose object carries the restart annotation (spec.restartAt) is stopped; its
        ReplicaSet's sync starts the replacement at once."""
        meta = self._pod_meta.get(pod)
        if meta is None or pod in self._draining:
            return
        obj = self.store.get("Pod", pod, meta[0])
        if obj is not None and RESTART_REQUESTED_ANNOTATION in objects.annotations_of(obj):
            log.info("pod %s: restart requested, replacing it", pod)
            self._remove_pod(pod)

    def _remove_pod(self, pod: str) -> None:
        """Take the pod out of routing now; stop it after in-flight requests have drained."""
        self._draining.add(pod)
        self._wake.set()
        meta = self._pod_meta.get(pod)
        if meta is not None:
            self._dirty_rs.add((meta[0], meta[1]))
            self._mark_pod(meta[0], meta[2])

        async def stop() -> None:
            try:
                await asyncio.sleep(DRAIN_SECONDS)
                await self.supervisor.stop_pod(pod)
            finally:
                if not self._detached:  # a detached runtime leaves the pod to the next leader
                    self._draining.discard(pod)
                    self._pods.pop(pod, None)
                    gone = self._drop_meta(pod)
                    if gone is not None:
                        self.store.delete("Pod", pod, gone[0])
                        self._dirty_rs.add((gone[0], gone[1]))
                        self._wake.set()
                    # A deleted pod's logs go with it, as on a cluster: nothing is left behind.
                    shutil.rmtree(self.state_dir / "logs" / pod, ignore_errors=True)

        task = asyncio.create_task(stop(), name=f"stop-pod-{pod}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _write_pod(self, status: PodStatus) -> None:
        meta = self._pod_meta.get(status.name)
        if meta is None:
            return
        pod_status = {
            "phase": str(status.phase.value if hasattr(status.phase, "value") else status.phase),
            "ready": status.ready,
            "podIP": status.host,
            "hostPort": status.port,
            "pids": list(status.pids),
            "restartCount": status.restarts,
            "message": status.message,
            "startTime": to_rfc3339_epoch(status.started_at),
            "logPaths": dict(status.log_paths),
            # What a restarted controller needs to adopt the pod (see _adopt_previous_pods).
            "containerStatuses": [
                {
                    "name": c.name,
                    "ready": c.ready,
                    "restartCount": c.restarts,
                    "lastState": c.last_state(),
                    "started": c.pid is not None,
                    "pid": c.pid,
                    "processStartTime": c.start_time,
                    "port": c.port,
                }
                for c in status.containers
            ],
        }
        current = self.store.get("Pod", status.name, meta[0])
        if current is None or current.get("status") == pod_status:
            return
        current["status"] = pod_status
        with contextlib.suppress(Exception):
            self.store.update_status(current)

    def _available(self, pod: str, min_ready: float, now: float) -> bool:
        status = self._pods.get(pod)
        if status is None or not status.ready or status.ready_since is None:
            return False
        return now - status.ready_since >= min_ready

    def _write_rs_status(self, namespace: str, name: str, rs: dict[str, Any]) -> None:
        pods = self._pods_of(namespace, name)
        min_ready = float(rs["spec"].get("minReadySeconds") or 0)
        now = time.time()
        ready = sum(1 for p in pods if p in self._pods and self._pods[p].ready)
        available = sum(1 for p in pods if self._available(p, min_ready, now))
        if min_ready > 0 and available < ready:
            self._recheck_later(namespace, name, min_ready)
        wanted = {
            "replicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if rs.get("status") == wanted:
            return

        def change(obj: dict[str, Any]) -> None:
            obj["status"] = wanted

        with contextlib.suppress(Exception):
            self.store.mutate("ReplicaSet", name, namespace, change, status=True)

    def _recheck_later(self, namespace: str, name: str, delay: float) -> None:
        def mark() -> None:
            self._dirty_rs.add((namespace, name))
            self._wake.set()

        asyncio.get_running_loop().call_later(delay, mark)

    # --- services --------------------------------------------------------------------------

    async def _sync_services(self) -> None:
        """Every Service: at start, and when a port could not be bound."""
        services = self.store.list("Service")
        wanted = {_service_key(svc) for svc in services}
        for key in list(self._listening):
            if key not in wanted:
                await self._drop_service(key)
        for key in list(self._routing):
            if key not in wanted:
                self._unindex(key)
        unbound = False
        for svc in services:
            key = _service_key(svc)
            try:
                unbound |= not await self._sync_service(key, svc)
            except Exception:  # one bad Service must not keep the others from being routed
                log.exception("service %s: sync failed", key)
        if unbound:
            self._retry_binding()

    async def _sync_changed_services(self) -> None:
        """The Services whose object was written, and those selecting a pod whose routing state
        changed (found through the index by pod-template hash, then by selector)."""
        keys: dict[str, tuple[str, str] | None] = {}  # service key -> (namespace, name) to read again
        while self._dirty_services:
            namespace, name = self._dirty_services.pop()
            keys[_service_key_of(namespace, name)] = (namespace, name)
        while self._dirty_pods:
            namespace, items = self._dirty_pods.pop()
            labels = dict(items)
            for key in self._services_selecting(namespace, labels):
                keys.setdefault(key, None)
        unbound = False
        for key, read in sorted(keys.items()):
            try:
                if read is None:  # only its pods changed: the Service object is as last read
                    routing = self._routing.get(key)
                    if routing is not None and key in self._listening:
                        self.proxy.set_routing(key, self._table(key, routing))
                    continue
                svc = self.store.get("Service", read[1], read[0])
                if svc is None:
                    await self._drop_service(key)
                    continue
                unbound |= not await self._sync_service(key, svc)
            except Exception:  # one bad Service must not keep the others from being routed
                log.exception("service %s: sync failed", key)
        if unbound:
            self._retry_binding()

    def _services_selecting(self, namespace: str, labels: dict[str, str]) -> list[str]:
        candidates: set[str] = set()
        for hash_ in {labels.get(HASH_LABEL), None}:
            candidates |= self._services_by_hash.get((namespace, hash_), set())
        return [key for key in candidates if self._routing[key].selects(labels)]

    async def _sync_service(self, key: str, svc: dict[str, Any]) -> bool:
        """Listen for and route one Service; False when its port could not be bound."""
        port = ((svc.get("spec") or {}).get("ports") or [{}])[0].get("port")
        if port is None:
            await self._drop_service(key)
            return True
        self._index(key, _routing_of(svc))
        if self._listening.get(key) != int(port):
            if key in self._listening:
                await self.proxy.remove_service(key)
                del self._listening[key]
            try:
                await self.proxy.add_service(key, int(port))
            except OSError as exc:
                log.error("service %s: cannot listen on 127.0.0.1:%s: %s (retrying)", key, port, exc)
                return False
            self._listening[key] = int(port)
        self.proxy.set_routing(key, self._table(key, self._routing[key]))
        return True

    async def _drop_service(self, key: str) -> None:
        self._unindex(key)
        if key in self._listening:
            await self.proxy.remove_service(key)
            del self._listening[key]

    def _index(self, key: str, routing: _ServiceRouting) -> None:
        self._unindex(key)
        self._routing[key] = routing
        for hash_ in routing.hashes():
            self._services_by_hash.setdefault((routing.namespace, hash_), set()).add(key)

    def _unindex(self, key: str) -> None:
        routing = self._routing.pop(key, None)
        if routing is None:
            return
        for hash_ in routing.hashes():
            keys = self._services_by_hash.get((routing.namespace, hash_))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._services_by_hash[(routing.namespace, hash_)]

    def _retry_binding(self) -> None:
        if self._bind_retry is None or self._bind_retry.cancelled():
            # The port may be freed soon (e.g. by a previous leader that is exiting): try again.
            def retry() -> None:
                self._bind_retry = None
                self.poke()

            self._bind_retry = asyncio.get_running_loop().call_later(1.0, retry)

    def _table(self, key: str, routing: _ServiceRouting) -> RoutingTable:
        primary = self._backends(routing.namespace, routing.selector)
        weight = routing.weight
        routes = _managed_routes(key, routing.routes)
        canary = None
        # Header routes and mirrors reach the canary at any weight, 0 included.
        if routing.canary_hash and (weight > 0 or routes):
            canary = self._backends(routing.namespace, {**routing.selector, HASH_LABEL: routing.canary_hash})
        return RoutingTable(
            primary=primary, canary=canary, canary_weight=weight if canary else 0, routes=routes if canary else ()
        )

    def _routing_for(self, svc: dict[str, Any]) -> RoutingTable:
        """The routing table of a Service object (read as the runtime reads it)."""
        return self._table(_service_key(svc), _routing_of(svc))

    def _backends(self, namespace: str, selector: dict[str, str]) -> RevisionBackends:
        backends = []
        pinned = selector.get(HASH_LABEL)
        pods: Iterable[str] = self._pods_by_hash.get((namespace, pinned), ()) if pinned is not None else self._pod_meta
        for pod in sorted(pods):
            ns, _rs, labels = self._pod_meta[pod]
            if ns != namespace or pod in self._draining or not objects.selector_matches(selector, labels):
                continue
            status = self._pods.get(pod)
            if status is None or not status.ready:
                continue
            backends.append(Backend(pod=pod, host=status.host, port=status.port))
        return RevisionBackends(revision=selector.get(HASH_LABEL, "none"), backends=tuple(backends))


def _routing_of(svc: dict[str, Any]) -> _ServiceRouting:
    notes = objects.annotations_of(svc)
    return _ServiceRouting(
        namespace=svc["metadata"].get("namespace", "default"),
        selector=dict((svc.get("spec") or {}).get("selector") or {}),
        weight=int(notes.get(objects.CANARY_WEIGHT_ANNOTATION, "0") or 0),
        canary_hash=notes.get(objects.CANARY_HASH_ANNOTATION),
        routes=notes.get(objects.MANAGED_ROUTES_ANNOTATION),
    )


@functools.lru_cache(maxsize=256)
def _managed_routes(service: str, value: str | None) -> tuple[ActiveRoute, ...]:
    """The routes of a Service's managed-routes annotation. Cached: the runtime asks on every
    sync, and an unreadable value is logged once, not once per sync (it then means no routes)."""
    if not value:
        return ()
    try:
        return routes_from_json(value)
    except RouteFormatError as exc:
        log.error("service %s: annotation %s ignored: %s", service, objects.MANAGED_ROUTES_ANNOTATION, exc)
        return ()


def _container_records(pod: dict[str, Any]) -> list[ContainerProcess]:
    """The container processes a Pod object records (see `_write_pod`); malformed entries skipped."""
    records = []
    for entry in (pod.get("status") or {}).get("containerStatuses") or []:
        if not isinstance(entry, dict) or not entry.get("name"):
            continue
        try:
            pid, start = entry.get("pid"), entry.get("processStartTime")
            records.append(
                ContainerProcess(
                    name=str(entry["name"]),
                    port=int(entry.get("port") or 0),
                    pid=int(pid) if pid is not None else None,
                    start_time=int(start) if start is not None else None,
                    ready=bool(entry.get("ready")),
                    restarts=int(entry.get("restartCount") or 0),
                )
            )
        except (TypeError, ValueError):
            continue
    return records


def _alive(record: ContainerProcess) -> bool:
    """Whether the recorded process still runs: same PID *and* same start time."""
    return record.pid is not None and record.start_time is not None and process_is(record.pid, record.start_time)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _service_key(svc: dict[str, Any]) -> str:
    return _service_key_of(svc["metadata"].get("namespace", "default"), str(svc["metadata"]["name"]))


def _service_key_of(namespace: str, name: str) -> str:
    return name if namespace == "default" else f"{namespace}/{name}"


def to_rfc3339_epoch(seconds: float) -> str:
    from datetime import UTC, datetime

    return to_rfc3339(datetime.fromtimestamp(seconds, UTC))
