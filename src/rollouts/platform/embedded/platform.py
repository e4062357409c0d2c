"""The embedded platform's control side: Workloads, Services and traffic as store writes.

The controller's actions become writes of ReplicaSet and Service objects in the SQLite
store; the embedded runtime (`runtime.py`) watches those objects and makes processes and
proxy routes match them, as kubelet and kube-proxy do on a cluster. Every write is skipped
when it would not change anything, so a steady rollout costs no writes.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from rollouts.core import metadata
from rollouts.core.hashing import HASH_LABEL
from rollouts.core.plan import PodView, ReplicaSetView, SetEphemeralMetadata
from rollouts.core.restart import restart_pending
from rollouts.core.routes import ActiveRoute, routes_json
from rollouts.core.timeutil import parse_rfc3339, to_rfc3339
from rollouts.model import validation
from rollouts.model.rollout import Rollout
from rollouts.platform.embedded import objects
from rollouts.store.errors import NotFoundError
from rollouts.store.sqlite import SqliteStore

# Set on a Pod object to have the embedded runtime replace that pod (spec.restartAt): the
# runtime owns the processes, so deleting the Pod object alone would not stop it.
RESTART_REQUESTED_ANNOTATION = "rollouts.io/restart-requested"


def _pods_of(store: SqliteStore, namespace: str, rs_name: str) -> tuple[PodView, ...]:
    """The ReplicaSet's pods, oldest first, read through the store's owner index."""
    pods = []
    for pod in store.list("Pod", namespace, owner=("ReplicaSet", rs_name)):
        created = parse_rfc3339(pod["metadata"].get("creationTimestamp"))
        if created is None:
            continue
        notes = objects.annotations_of(pod)
        pods.append(
            PodView(
                name=str(pod["metadata"]["name"]),
                created=created,
                ready=bool((pod.get("status") or {}).get("ready")),
                terminating=RESTART_REQUESTED_ANNOTATION in notes,
                labels=metadata.pairs(objects.labels_of(pod)),
                annotations=metadata.pairs(notes),
            )
        )
    return tuple(sorted(pods, key=lambda pod: (pod.created, pod.name)))


class EmbeddedWorkloads:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def replica_sets(self, rollout: Rollout) -> list[ReplicaSetView]:
        namespace = rollout.metadata.namespace or "default"
        restarting = restart_pending(rollout)
        views = []
        for rs in self.store.list("ReplicaSet", namespace, owner=("Rollout", rollout.metadata.name)):
            status = rs.get("status") or {}
            hash_ = objects.labels_of(rs).get(HASH_LABEL, "")
            notes = objects.annotations_of(rs)
            name = rs["metadata"]["name"]
            replicas = int(rs["spec"].get("replicas", 0))
            listed = restarting or metadata.wants_pods(rollout, notes, replicas)
            views.append(
                ReplicaSetView(
                    name=name,
                    pod_hash=hash_,
                    revision=int(notes.get(objects.REVISION_ANNOTATION, "0")),
                    replicas=replicas,
                    ready=int(status.get("readyReplicas", 0)),
                    available=int(status.get("availableReplicas", 0)),
                    template=rs["spec"].get("template") or {},
                    scale_down_at=objects.scale_down_deadline(rs),
                    pods=_pods_of(self.store, namespace, name) if listed else (),
                    ephemeral=metadata.parse_bookkeeping(notes),
                )
            )
        return views

    async def create_replica_set(
        self, rollout: Rollout, name: str, pod_hash: str, revision: int, replicas: int, template: dict[str, Any]
    ) -> None:
        selector = dict((rollout.spec.selector.match_labels or {}) if rollout.spec.selector else {})
        selector[HASH_LABEL] = pod_hash
        self.store.create(
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": name,
                    "namespace": rollout.metadata.namespace or "default",
                    "labels": {**((template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: pod_hash},
                    "annotations": {objects.REVISION_ANNOTATION: str(revision)},
                    "ownerReferences": [
                        {
                            "apiVersion": "argoproj.io/v1alpha1",
                            "kind": "Rollout",
                            "name": rollout.metadata.name,
                            "uid": rollout.metadata.uid or "",
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": replicas,
                    "minReadySeconds": rollout.spec.min_ready_seconds or 0,
                    "selector": {"matchLabels": selector},
                    "template": template,
                },
                "status": {"replicas": 0, "readyReplicas": 0, "availableReplicas": 0},
            }
        )

    async def scale_replica_set(self, namespace: str, name: str, replicas: int) -> None:
        def change(rs: dict[str, Any]) -> None:
            rs["spec"]["replicas"] = replicas

        self.store.mutate("ReplicaSet", name, namespace, change)

    async def set_scale_down_deadline(self, namespace: str, name: str, at: datetime | None) -> None:
        def change(rs: dict[str, Any]) -> None:
            notes = rs["metadata"].setdefault("annotations", {})
            if at is None:
                notes.pop(objects.SCALE_DOWN_DEADLINE_ANNOTATION, None)
            else:
                notes[objects.SCALE_DOWN_DEADLINE_ANNOTATION] = to_rfc3339(at)

        self.store.mutate("ReplicaSet", name, namespace, change)

    async def set_revision(self, namespace: str, name: str, revision: int) -> None:
        def change(rs: dict[str, Any]) -> None:
            rs["metadata"].setdefault("annotations", {})[objects.REVISION_ANNOTATION] = str(revision)

        self.store.mutate("ReplicaSet", name, namespace, change)

    async def delete_replica_set(self, namespace: str, name: str) -> None:
        self.store.delete("ReplicaSet", name, namespace)

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Ask the runtime to replace the pod: it drains and stops it, then deletes the Pod object."""
        stamp = to_rfc3339(datetime.now(UTC))

        def change(pod: dict[str, Any]) -> None:
            pod["metadata"].setdefault("annotations", {}).setdefault(RESTART_REQUESTED_ANNOTATION, stamp)

        with contextlib.suppress(NotFoundError):
            self.store.mutate("Pod", name, namespace, change)

    async def set_ephemeral_metadata(self, namespace: str, change: SetEphemeralMetadata) -> None:
        """Template (bookkeeping widened), then the Pod objects, then the bookkeeping narrowed;
        the runtime routes by the Pod objects' labels, so a Service selecting a role label
        follows the change."""
        if self.store.get("ReplicaSet", change.name, namespace) is None:
            return

        def template(rs: dict[str, Any]) -> None:
            recorded = metadata.parse_bookkeeping(objects.annotations_of(rs))
            metadata.apply_to_template(rs["spec"].setdefault("template", {}), change)
            metadata.set_bookkeeping(rs, metadata.widened(recorded, change))

        def pod_meta(pod: dict[str, Any]) -> None:
            metadata.apply_to(pod["metadata"], change)

        def narrowed(rs: dict[str, Any]) -> None:
            metadata.set_bookkeeping(rs, change.wanted)

        with contextlib.suppress(NotFoundError):
            self.store.mutate("ReplicaSet", change.name, namespace, template)
            for pod in self.store.list("Pod", namespace, owner=("ReplicaSet", change.name)):
                if metadata.apply_to(dict(pod["metadata"]), change):
                    with contextlib.suppress(NotFoundError):
                        self.store.mutate("Pod", pod["metadata"]["name"], namespace, pod_meta)
            self.store.mutate("ReplicaSet", change.name, namespace, narrowed)


class EmbeddedServices:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def exists(self, namespace: str, name: str) -> bool:
        return self.store.exists("Service", name, namespace)

    async def point(self, namespace: str, name: str, pod_hash: str) -> None:
        current = self.store.get("Service", name, namespace)
        if current is None or ((current.get("spec") or {}).get("selector") or {}).get(HASH_LABEL) == pod_hash:
            return

        def change(svc: dict[str, Any]) -> None:
            svc.setdefault("spec", {}).setdefault("selector", {})[HASH_LABEL] = pod_hash

        # `current` is edited when it is still the stored version: not decoded a second time.
        self.store.mutate("Service", name, namespace, change, current=current)


class EmbeddedTraffic:
    """The built-in proxy as a traffic router: weight, canary revision and managed routes
    (header routes and mirrors, as JSON) on the stable Service."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def set_weight(
        self,
        namespace: str,
        rollout: str,
        stable_service: str,
        canary_service: str | None,
        canary_hash: str,
        weight: int,
        routes: tuple[ActiveRoute, ...] = (),
    ) -> None:
        current = self.store.get("Service", stable_service, namespace)
        if current is None:
            return
        wanted = {
            objects.CANARY_WEIGHT_ANNOTATION: str(weight),
            objects.CANARY_HASH_ANNOTATION: canary_hash,
            objects.CANARY_SERVICE_ANNOTATION: canary_service or "",
        }
        routes_value = routes_json(routes) if routes else None
        notes = objects.annotations_of(current)
        if (
            all(notes.get(k) == v for k, v in wanted.items())
            and notes.get(objects.MANAGED_ROUTES_ANNOTATION) == routes_value
        ):
            return

        def change(svc: dict[str, Any]) -> None:
            annotations = svc["metadata"].setdefault("annotations", {})
            annotations.update(wanted)
            if routes_value is None:
                annotations.pop(objects.MANAGED_ROUTES_ANNOTATION, None)
            else:
                annotations[objects.MANAGED_ROUTES_ANNOTATION] = routes_value

        self.store.mutate("Service", stable_service, namespace, change, current=current)


class EmbeddedPlatform:
    name = "embedded"
    # The built-in proxy splits every canary by weight, so canaries are planned as traffic-routed.
    implicit_traffic_router = True

    def __init__(self, store: SqliteStore) -> None:
        self.workloads = EmbeddedWorkloads(store)
        self.services = EmbeddedServices(store)
        self.traffic = EmbeddedTraffic(store)

    def unsupported(self, rollout: Rollout) -> str | None:
        """The first thing in the rollout this platform cannot run, in the words lint warns with."""
        findings = validation.unsupported_features(rollout)
        if findings:
            return f"{findings[0].path}: {findings[0].message}"
        template = rollout.spec.template
        for index, container in enumerate(template.spec.containers if template else []):
            if not container.command:
                return (
                    f"spec.template.spec.containers[{index}].command: not set; the embedded platform runs "
                    "command + args as a local process"
                )
        return None
