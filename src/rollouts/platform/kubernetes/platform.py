"""The Kubernetes platform: ReplicaSets, Service selectors and NGINX canary Ingresses.

Acts like Argo Rollouts on a cluster: a ReplicaSet per revision named
`<rollout>-<pod-template-hash>` with the hash label, the revision annotation and an owner
reference to the Rollout (so deleting the Rollout garbage-collects it); Services pinned to
a revision by adding the hash to their selector; canary traffic through the NGINX Ingress
controller's canary annotations on a `<rollout>-<ingress>-canary` copy of the stable
Ingress. A rollout without `trafficRouting` is a basic canary: traffic follows pod counts.

Managed routes on NGINX (`canary_header_annotations`): a canary Ingress can route by one
header only (`canary-by-header` with `-value` or `-pattern`), so the highest-precedence header
route's first match is applied and anything more is reported in a Warning (log and Event), as
is a mirror route, which NGINX canary Ingresses cannot express (its step completes without
effect).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rollouts.core import metadata
from rollouts.core.hashing import HASH_LABEL
from rollouts.core.plan import PodView, ReplicaSetView, SetEphemeralMetadata
from rollouts.core.restart import restart_pending
from rollouts.core.routes import ActiveRoute, HeaderMatch, HeaderRoute, MirrorRoute
from rollouts.core.timeutil import parse_rfc3339, to_rfc3339
from rollouts.model import validation
from rollouts.model.rollout import Rollout
from rollouts.platform.kubernetes import resources
from rollouts.platform.kubernetes.store import KubeStore
from rollouts.store.errors import NotFoundError

REVISION_ANNOTATION = "rollout.argoproj.io/revision"
SCALE_DOWN_DEADLINE_ANNOTATION = "scale-down-deadline"
MANAGED_BY_ANNOTATION = "rollouts-managed-by"
DEFAULT_NGINX_PREFIX = "nginx.ingress.kubernetes.io"

Obj = dict[str, Any]

log = logging.getLogger(__name__)


def _owned_by(obj: Obj, kind: str, name: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("kind") == kind and ref.get("name") == name for ref in refs)


class KubernetesWorkloads:
    def __init__(self, store: KubeStore) -> None:
        self.store = store

    def _pods(self, namespace: str, labels: dict[str, str]) -> dict[str, list[PodView]]:
        """The pods carrying `labels` (the rollout's selector; informer cache) by owning ReplicaSet."""
        pods: dict[str, list[PodView]] = {}
        for pod in self.store.list("Pod", namespace, labels):
            meta = pod.get("metadata") or {}
            owner = next(
                (r.get("name") for r in meta.get("ownerReferences") or [] if r.get("kind") == "ReplicaSet"), None
            )
            created = parse_rfc3339(meta.get("creationTimestamp"))
            if owner is None or created is None:
                continue
            conditions = (pod.get("status") or {}).get("conditions") or []
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            pods.setdefault(str(owner), []).append(
                PodView(
                    name=str(meta["name"]),
                    created=created,
                    ready=ready,
                    terminating=meta.get("deletionTimestamp") is not None,
                    labels=metadata.pairs(meta.get("labels")),
                    annotations=metadata.pairs(meta.get("annotations")),
                )
            )
        return pods

    def replica_sets(self, rollout: Rollout) -> list[ReplicaSetView]:
        namespace = rollout.metadata.namespace or "default"
        owned = [
            rs for rs in self.store.list("ReplicaSet", namespace) if _owned_by(rs, "Rollout", rollout.metadata.name)
        ]
        listed = restart_pending(rollout) or any(
            metadata.wants_pods(
                rollout,
                (rs.get("metadata") or {}).get("annotations") or {},
                int((rs.get("spec") or {}).get("replicas", 0)),
            )
            for rs in owned
        )
        selector = dict((rollout.spec.selector.match_labels or {}) if rollout.spec.selector else {})
        pods = self._pods(namespace, selector) if listed else {}
        views = []
        for rs in owned:
            meta = rs.get("metadata") or {}
            notes = meta.get("annotations") or {}
            status = rs.get("status") or {}
            views.append(
                ReplicaSetView(
                    name=meta["name"],
                    pod_hash=(meta.get("labels") or {}).get(HASH_LABEL, ""),
                    revision=int(notes.get(REVISION_ANNOTATION, "0") or 0),
                    replicas=int((rs.get("spec") or {}).get("replicas", 0)),
                    ready=int(status.get("readyReplicas", 0)),
                    available=int(status.get("availableReplicas", 0)),
                    template=(rs.get("spec") or {}).get("template") or {},
                    scale_down_at=parse_rfc3339(notes.get(SCALE_DOWN_DEADLINE_ANNOTATION)),
                    pods=tuple(sorted(pods.get(meta["name"], []), key=lambda pod: (pod.created, pod.name))),
                    ephemeral=metadata.parse_bookkeeping(notes),
                )
            )
        return views

    async def create_replica_set(
        self, rollout: Rollout, name: str, pod_hash: str, revision: int, replicas: int, template: dict[str, Any]
    ) -> None:
        selector = dict((rollout.spec.selector.match_labels or {}) if rollout.spec.selector else {})
        selector[HASH_LABEL] = pod_hash
        await self.store.create(
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": name,
                    "namespace": rollout.metadata.namespace or "default",
                    "labels": {**((template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: pod_hash},
                    "annotations": {REVISION_ANNOTATION: str(revision)},
                    "ownerReferences": [
                        {
                            "apiVersion": "argoproj.io/v1alpha1",
                            "kind": "Rollout",
                            "name": rollout.metadata.name,
                            "uid": rollout.metadata.uid or "",
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": replicas,
                    "minReadySeconds": rollout.spec.min_ready_seconds or 0,
                    "selector": {"matchLabels": selector},
                    "template": template,
                },
            }
        )

    async def scale_replica_set(self, namespace: str, name: str, replicas: int) -> None:
        def change(rs: Obj) -> None:
            rs.setdefault("spec", {})["replicas"] = replicas

        await self.store.mutate("ReplicaSet", name, namespace, change)

    async def set_scale_down_deadline(self, namespace: str, name: str, at: datetime | None) -> None:
        def change(rs: Obj) -> None:
            notes = rs["metadata"].setdefault("annotations", {})
            if at is None:
                notes.pop(SCALE_DOWN_DEADLINE_ANNOTATION, None)
            else:
                notes[SCALE_DOWN_DEADLINE_ANNOTATION] = to_rfc3339(at)

        await self.store.mutate("ReplicaSet", name, namespace, change)

    async def set_revision(self, namespace: str, name: str, revision: int) -> None:
        def change(rs: Obj) -> None:
            rs["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = str(revision)

        await self.store.mutate("ReplicaSet", name, namespace, change)

    async def delete_replica_set(self, namespace: str, name: str) -> None:
        await self.store.delete("ReplicaSet", name, namespace)

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete the pod; the ReplicaSet controller starts its replacement (PDBs are not consulted)."""
        await self.store.delete("Pod", name, namespace)

    async def set_ephemeral_metadata(self, namespace: str, change: SetEphemeralMetadata) -> None:
        """Template (bookkeeping widened), then the pods in place (`update`, as Argo), then the
        bookkeeping narrowed. Pods are read from the informer cache: one created meanwhile from
        the old template shows on the next reconcile (its creation requeues the rollout)."""
        rs = self.store.get("ReplicaSet", change.name, namespace)
        if rs is None:
            return
        pod_hash = (rs["metadata"].get("labels") or {}).get(HASH_LABEL, "")

        def template(obj: Obj) -> None:
            recorded = metadata.parse_bookkeeping(obj["metadata"].get("annotations") or {})
            metadata.apply_to_template(obj.setdefault("spec", {}).setdefault("template", {}), change)
            metadata.set_bookkeeping(obj, metadata.widened(recorded, change))

        def pod_meta(pod: Obj) -> None:
            metadata.apply_to(pod["metadata"], change)

        def narrowed(obj: Obj) -> None:
            metadata.set_bookkeeping(obj, change.wanted)

        await self._write_if_changed("ReplicaSet", change.name, namespace, template)
        for pod in self.store.list("Pod", namespace, {HASH_LABEL: pod_hash} if pod_hash else None):
            if _owned_by(pod, "ReplicaSet", change.name):
                await self._write_if_changed("Pod", pod["metadata"]["name"], namespace, pod_meta)
        await self._write_if_changed("ReplicaSet", change.name, namespace, narrowed)

    async def _write_if_changed(self, kind: str, name: str, namespace: str, change: Callable[[Obj], None]) -> None:
        """`mutate`, skipped when `change` leaves the cached object as it is (the API server
        would store an identical object; a steady rollout costs no request)."""
        current = self.store.get(kind, name, namespace)
        if current is None:
            return
        probe = copy.deepcopy(current)
        change(probe)
        if probe != current:
            with contextlib.suppress(NotFoundError):
                await self.store.mutate(kind, name, namespace, change)


class KubernetesServices:
    def __init__(self, store: KubeStore) -> None:
        self.store = store

    def exists(self, namespace: str, name: str) -> bool:
        return self.store.get("Service", name, namespace) is not None

    async def point(self, namespace: str, name: str, pod_hash: str) -> None:
        current = self.store.get("Service", name, namespace)
        if current is None or ((current.get("spec") or {}).get("selector") or {}).get(HASH_LABEL) == pod_hash:
            return

        def change(svc: Obj) -> None:
            svc.setdefault("spec", {}).setdefault("selector", {})[HASH_LABEL] = pod_hash

        await self.store.mutate("Service", name, namespace, change)


class NginxTraffic:
    """NGINX Ingress canary: a copy of the stable Ingress that sends `weight` % to the canary
    Service, and requests with the header of the first header route whatever the weight."""

    def __init__(self, store: KubeStore) -> None:
        self.store = store
        # Warnings already given, so that a reconcile every few seconds does not repeat them:
        # (namespace, rollout, canary hash, message); a new update warns again.
        self._warned: set[tuple[str, str, str, str]] = set()

    async def _warn(self, namespace: str, rollout: str, canary_hash: str, reason: str, message: str) -> None:
        key = (namespace, rollout, canary_hash, message)
        if key in self._warned:
            return
        if len(self._warned) > 10_000:
            self._warned.clear()  # bounded; at worst a warning is given again
        self._warned.add(key)
        log.warning("rollout %s/%s: %s", namespace, rollout, message)
        try:
            await self.store.record_event("Rollout", rollout, namespace, "Warning", reason, message)
        except Exception as exc:  # an Event is best effort: the Ingress must still be updated
            log.warning("rollout %s/%s: event %s not recorded: %s", namespace, rollout, reason, exc)

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
        raw = self.store.get("Rollout", rollout, namespace)
        if raw is None or canary_service is None:
            return
        routing = (((raw.get("spec") or {}).get("strategy") or {}).get("canary") or {}).get("trafficRouting") or {}
        nginx = routing.get("nginx")
        if not nginx:
            return
        prefix = nginx.get("annotationPrefix") or DEFAULT_NGINX_PREFIX
        header, warnings = nginx_header_route(routes)
        for reason, message in warnings:
            await self._warn(namespace, rollout, canary_hash, reason, message)
        stable_ingresses = (
            [nginx["stableIngress"]] if nginx.get("stableIngress") else list(nginx.get("stableIngresses") or [])
        )
        for stable_name in stable_ingresses:
            stable = self.store.get("Ingress", stable_name, namespace)
            if stable is None:
                continue
            desired = canary_ingress(stable, rollout, stable_service, canary_service, weight, prefix, nginx, header)
            current = self.store.get("Ingress", desired["metadata"]["name"], namespace)
            if current is None:
                await self.store.create(desired)
            elif (
                current.get("spec") != desired["spec"]
                or (current["metadata"].get("annotations") or {}) != (desired["metadata"]["annotations"])
            ):
                current["spec"] = desired["spec"]
                current["metadata"]["annotations"] = desired["metadata"]["annotations"]
                await self.store.update(current)


def nginx_header_route(routes: tuple[ActiveRoute, ...]) -> tuple[HeaderMatch | None, list[tuple[str, str]]]:
    """The one header match an NGINX canary Ingress can apply (the first match of the
    highest-precedence header route), and (reason, message) warnings for what it cannot."""
    headers = [route for route in routes if isinstance(route, HeaderRoute)]
    warnings: list[tuple[str, str]] = []
    for route in routes:
        if isinstance(route, MirrorRoute):
            warnings.append(
                (
                    "MirrorRouteNotSupported",
                    f'setMirrorRoute "{route.name}" has no effect: NGINX canary Ingresses cannot mirror '
                    "traffic (use the embedded platform, or a mesh router)",
                )
            )
    if not headers:
        return None, warnings
    first = headers[0]
    ignored = [f'match[{i}] ({m.name}) of route "{first.name}"' for i, m in enumerate(first.matches) if i > 0]
    ignored += [f'route "{route.name}"' for route in headers[1:]]
    if ignored:
        warnings.append(
            (
                "HeaderRouteLimited",
                f'NGINX routes by one header only: applying header {first.matches[0].name!r} of route "{first.name}"; '
                f"ignored: {', '.join(ignored)}",
            )
        )
    return first.matches[0], warnings


def canary_header_annotations(match: HeaderMatch, prefix: str) -> dict[str, str]:
    """NGINX canary-by-header annotations for one header match.

    `exact` is `canary-by-header-value`. `regex` and `prefix` are `canary-by-header-pattern`,
    which NGINX searches for anywhere in the value (Lua `ngx.re.match`): anchored here, so that
    a regex must match the whole value (as Istio's does) and a prefix is `^<escaped prefix>.*`.
    """
    notes = {f"{prefix}/canary-by-header": match.name}
    value = match.value
    if value.kind == "exact":
        notes[f"{prefix}/canary-by-header-value"] = value.value
    elif value.kind == "prefix":
        notes[f"{prefix}/canary-by-header-pattern"] = f"^{re.escape(value.value)}.*"
    else:
        notes[f"{prefix}/canary-by-header-pattern"] = f"^(?:{value.value})$"
    return notes


def canary_ingress(
    stable: Obj,
    rollout: str,
    stable_service: str,
    canary_service: str,
    weight: int,
    prefix: str,
    nginx: Obj,
    header: HeaderMatch | None = None,
) -> Obj:
    """The canary Ingress Argo builds: the stable's rules pointed at the canary Service, with
    canary annotations; and, with a header route in effect, NGINX's canary-by-header ones."""
    name = f"{rollout}-{stable['metadata']['name']}-canary"
    spec = copy.deepcopy(stable.get("spec") or {})
    spec.pop("tls", None)  # the stable Ingress terminates TLS; nginx shares it
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            backend = (path.get("backend") or {}).get("service") or {}
            if backend.get("name") == stable_service:
                backend["name"] = canary_service
    annotations = {
        f"{prefix}/canary": "true",
        f"{prefix}/canary-weight": str(weight),
        **(nginx.get("additionalIngressAnnotations") or {}),
        **(nginx.get("canaryIngressAnnotations") or {}),
    }
    if header is not None:
        # The route replaces any canary-by-header set by hand in canaryIngressAnnotations.
        for suffix in ("canary-by-header", "canary-by-header-value", "canary-by-header-pattern"):
            annotations.pop(f"{prefix}/{suffix}", None)
        annotations.update(canary_header_annotations(header, prefix))
    ingress_class = (stable["metadata"].get("annotations") or {}).get("kubernetes.io/ingress.class")
    if ingress_class:
        annotations["kubernetes.io/ingress.class"] = ingress_class
    annotations[MANAGED_BY_ANNOTATION] = rollout
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": stable["metadata"].get("namespace", "default"),
            "annotations": annotations,
            "labels": dict(stable["metadata"].get("labels") or {}),
        },
        "spec": spec,
    }


class KubernetesPlatform:
    name = "kubernetes"
    # Without trafficRouting a canary on a cluster is a basic canary: traffic follows pod counts.
    implicit_traffic_router = False
    # Kubernetes' garbage collector deletes what a deleted Rollout owned (ownerReferences).
    garbage_collects_owned = True

    def __init__(self, store: KubeStore) -> None:
        self.workloads = KubernetesWorkloads(store)
        self.services = KubernetesServices(store)
        self.traffic = NginxTraffic(store)

    def unsupported(self, rollout: Rollout) -> str | None:
        findings = validation.unsupported_features(rollout)
        return f"{findings[0].path}: {findings[0].message}" if findings else None


__all__ = ["KubernetesPlatform", "canary_ingress", "resources"]
