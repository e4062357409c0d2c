"""Reconciling one Rollout: observe, plan (pure core), act through the platform, write status once.

The order is Argo's: read the rollout and what it owns, let the planner decide, carry out
the actions (traffic and Service changes are carried out in the order planned, so traffic
leaves a revision before that revision is scaled down), then write the status only if it
changed, with the resourceVersion that was read — a concurrent CLI write wins and the
rollout is simply reconciled again.

Actions are carried out before the status is written, so a run can be created by a reconcile
whose status write never happens (the controller is killed in between, or the write meets a
conflict). The next plan finds no run named in the status and asks for a new one; as Argo's
`CreateWithCollisionCounter` does, the unfinished run of the same kind, revision and step,
owned by this rollout, is taken as that run instead of starting a duplicate.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from rollouts.analysis.build import build_analysis_run
from rollouts.analysis.errors import AnalysisBuildError
from rollouts.controller.admin import ControllerMetrics
from rollouts.controller.references import missing_references
from rollouts.core import plan as p
from rollouts.core.planner import plan
from rollouts.core.timeutil import parse_rfc3339
from rollouts.model.analysis import AnalysisRun, AnalysisTemplate, Argument, ClusterAnalysisTemplate
from rollouts.model.meta import OwnerReference
from rollouts.model.rollout import AnalysisTemplateRef, Rollout, RolloutStatus
from rollouts.model.scope import instance_label
from rollouts.platform.protocols import Platform
from rollouts.store.errors import AlreadyExistsError
from rollouts.store.protocol import AsyncSqliteStore, ResourceStore

log = logging.getLogger(__name__)

ROLLOUT_LABEL = "rollout"
RUN_TYPE_LABEL = "rollout-type"
STEP_INDEX_LABEL = "step-index"
HASH_LABEL = "rollouts-pod-template-hash"
REVISION_ANNOTATION = "rollout.argoproj.io/revision"


@dataclass
class Outcome:
    requeue_after: float | None
    wrote_status: bool


class RolloutReconciler:
    def __init__(
        self,
        store: ResourceStore,
        platform: Platform,
        clock: Callable[[], datetime],
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.store = store
        self.platform = platform
        self.clock = clock
        self.metrics = metrics
        # On the SQLite store a reconcile's events are written with its next write, not each
        # in a transaction of its own (see `SqliteStore.deferring_events`).
        self._events_deferred: Callable[[], contextlib.AbstractContextManager[None]] = (
            store.deferring_events if isinstance(store, AsyncSqliteStore) else contextlib.nullcontext
        )

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        """One reconcile; with metrics, its time (rollout_reconcile) and failures are counted."""
        if self.metrics is None:
            return await self._reconcile(namespace, name)
        started = time.perf_counter()
        try:
            return await self._reconcile(namespace, name)
        except Exception:
            self.metrics.reconcile_error.labels(namespace, name).inc()
            raise
        finally:
            self.metrics.reconcile.labels(namespace, name).observe(time.perf_counter() - started)

    async def _reconcile(self, namespace: str, name: str) -> Outcome:
        raw = self.store.get("Rollout", name, namespace)
        if raw is None:
            await self._collect_garbage(namespace, name)
            return Outcome(None, False)
        try:
            rollout = Rollout.model_validate(raw)
        except ValidationError as exc:
            return await self._write_invalid(raw, f"the manifest does not parse: {exc.errors()[0]['msg']}")
        invalid = self.platform.unsupported(rollout) or missing_references(rollout, self.store, self.platform.services)
        snapshot = p.Snapshot(
            rollout=rollout,
            replica_sets=tuple(self.platform.workloads.replica_sets(rollout)),
            runs=tuple(self._runs(namespace, name)),
            now=self.clock(),
            invalid_spec=invalid,
            implicit_router=self.platform.implicit_traffic_router,
        )
        result = plan(snapshot)
        self._reclaim_runs(rollout, raw, result)
        with self._events_deferred():
            for action in result.actions:
                await self._act(rollout, action)
            wrote = await self._write_status(raw, result.status)
        if self.metrics is not None:
            # After the status write: a reconcile whose write conflicts is planned again.
            for ended in result.outcomes:
                self.metrics.observe_outcome(namespace, ended)
        return Outcome(result.requeue_after, wrote)

    # --- observe ---------------------------------------------------------------------------

    def _runs(self, namespace: str, rollout: str) -> list[p.RunView]:
        views = []
        # By owner (read through the store's index, as Argo matches runs by controller ref).
        for raw in self.store.list("AnalysisRun", namespace, {ROLLOUT_LABEL: rollout}, owner=("Rollout", rollout)):
            labels = raw["metadata"].get("labels") or {}
            status = raw.get("status") or {}
            step = labels.get(STEP_INDEX_LABEL)
            views.append(
                p.RunView(
                    name=raw["metadata"]["name"],
                    kind=labels.get(RUN_TYPE_LABEL, ""),
                    pod_hash=labels.get(HASH_LABEL, ""),
                    step_index=int(step) if step is not None and step.isdigit() else None,
                    phase=status.get("phase") or "Pending",
                    message=status.get("message") or "",
                    terminating=bool((raw.get("spec") or {}).get("terminate")),
                    created=parse_rfc3339(raw["metadata"].get("creationTimestamp")),
                )
            )
        return views

    def _reclaim_runs(self, rollout: Rollout, raw: dict[str, Any], result: p.Plan) -> None:
        """Take an unfinished run that no status slot names as the run the plan asks to create.

        Such a run was created by a reconcile whose status write was lost (see the module
        docstring). Its CreateAnalysisRun (and event) are dropped and the status slot names it.
        """
        creates = [a for a in result.actions if isinstance(a, p.CreateAnalysisRun)]
        if not creates:
            return
        namespace = rollout.metadata.namespace or "default"
        recorded = _slot_names(raw.get("status") or {})
        claimed: set[str] = set()
        for action in creates:
            base = re.sub(r"\.\d+$", "", action.name)
            owned = self.store.list(
                "AnalysisRun",
                namespace,
                {ROLLOUT_LABEL: rollout.metadata.name},
                owner=("Rollout", rollout.metadata.name),
            )
            for run in owned:
                name = str(run["metadata"]["name"])
                if name in recorded or name in claimed or not (name == base or name.startswith(base + ".")):
                    continue
                if not (_unfinished(run) and _is_run_for(run, rollout, action)):
                    continue
                claimed.add(name)
                result.actions = [
                    a
                    for a in result.actions
                    if a is not action
                    and not (
                        isinstance(a, p.RecordEvent)
                        and a.reason == "AnalysisRunCreated"
                        and a.message.endswith(f" {action.name}")
                    )
                ]
                _rename_slot(result.status, action.name, name)
                log.info(
                    "rollout %s/%s: %s AnalysisRun %s was created before; it is the run",
                    namespace,
                    rollout.metadata.name,
                    action.kind,
                    name,
                )
                break

    # --- act -------------------------------------------------------------------------------

    async def _act(self, rollout: Rollout, action: p.Action) -> None:
        namespace = rollout.metadata.namespace or "default"
        workloads = self.platform.workloads
        match action:
            case p.CreateReplicaSet():
                await workloads.create_replica_set(
                    rollout, action.name, action.pod_hash, action.revision, action.replicas, action.template
                )
            case p.ScaleReplicaSet():
                await workloads.scale_replica_set(namespace, action.name, action.replicas)
            case p.SetScaleDownDeadline():
                await workloads.set_scale_down_deadline(namespace, action.name, action.at)
            case p.SetRevision():
                await workloads.set_revision(namespace, action.name, action.revision)
            case p.DeleteReplicaSet():
                await workloads.delete_replica_set(namespace, action.name)
            case p.PointService():
                await self.platform.services.point(namespace, action.service, action.pod_hash)
            case p.SetCanaryWeight():
                await self.platform.traffic.set_weight(
                    namespace,
                    rollout.metadata.name,
                    action.stable_service,
                    action.canary_service,
                    action.canary_hash,
                    action.weight,
                    action.routes,
                )
            case p.CreateAnalysisRun():
                await self._create_run(rollout, action)
            case p.TerminateAnalysisRun():
                await self._terminate_run(namespace, action.name)
            case p.DeleteAnalysisRun():
                await self.store.delete("AnalysisRun", action.name, namespace)
            case p.RestartPod():
                await workloads.delete_pod(namespace, action.name)
            case p.SetEphemeralMetadata():
                await workloads.set_ephemeral_metadata(namespace, action)
            case p.RecordEvent():
                await self.store.record_event(
                    "Rollout", rollout.metadata.name, namespace, action.type, action.reason, action.message
                )
                if self.metrics is not None:
                    self.metrics.events.labels(namespace, rollout.metadata.name, action.type, action.reason).inc()

    def _lookup(
        self, namespace: str
    ) -> Callable[[AnalysisTemplateRef], AnalysisTemplate | ClusterAnalysisTemplate | None]:
        def lookup(ref: AnalysisTemplateRef) -> AnalysisTemplate | ClusterAnalysisTemplate | None:
            if ref.cluster_scope:
                raw = self.store.get("ClusterAnalysisTemplate", ref.template_name)
                return ClusterAnalysisTemplate.model_validate(raw) if raw else None
            raw = self.store.get("AnalysisTemplate", ref.template_name, namespace)
            return AnalysisTemplate.model_validate(raw) if raw else None

        return lookup

    async def _create_run(self, rollout: Rollout, action: p.CreateAnalysisRun) -> None:
        namespace = rollout.metadata.namespace or "default"
        lookup = self._lookup(namespace)
        labels = {
            **dict(action.labels),
            **((rollout.spec.selector.match_labels or {}) if rollout.spec.selector else {}),
            ROLLOUT_LABEL: rollout.metadata.name,
            RUN_TYPE_LABEL: action.kind,
            HASH_LABEL: action.pod_hash,
            # The run stays with the rollout's controller (Argo copies the instance-id label).
            **instance_label(rollout.metadata.labels),
        }
        if action.step_index is not None:
            labels[STEP_INDEX_LABEL] = str(action.step_index)
        annotations = {**dict(action.annotations), REVISION_ANNOTATION: str(action.revision)}
        owner = OwnerReference(
            api_version="argoproj.io/v1alpha1",
            kind="Rollout",
            name=rollout.metadata.name,
            uid=rollout.metadata.uid or "",
            controller=True,
        )
        try:
            templates = []
            for ref in action.templates:
                found = lookup(ref)
                if found is None:
                    raise AnalysisBuildError(f'analysis template "{ref.template_name}" not found')
                templates.append(found)
            run = build_analysis_run(
                name=action.name,
                namespace=namespace,
                templates=templates,
                args=[Argument(name=n, value=v) for n, v in action.args],
                lookup=lookup,
                labels=labels,
                annotations=annotations,
                owner=owner,
                dry_run=action.dry_run,
                measurement_retention=action.measurement_retention,
            )
            body = run.to_json()
        except AnalysisBuildError as exc:
            # Argo records an errored run so the rollout aborts with the reason.
            body = AnalysisRun.model_validate(
                {
                    "metadata": {
                        "name": action.name,
                        "namespace": namespace,
                        "labels": labels,
                        "annotations": annotations,
                        "ownerReferences": [owner.to_json()],
                    },
                    "spec": {"metrics": []},
                    "status": {"phase": "Error", "message": str(exc)},
                }
            ).to_json()
            status = body.pop("status")
            try:
                created = await self.store.create(body)
            except AlreadyExistsError:
                self._check_ours(rollout, action)
                return
            created["status"] = status
            await self.store.update_status(created)
            return
        try:
            await self.store.create(body)
        except AlreadyExistsError:
            self._check_ours(rollout, action)

    def _check_ours(self, rollout: Rollout, action: p.CreateAnalysisRun) -> None:
        """A run of the planned name exists already: fine when it is this rollout's run for the
        same purpose (created by an earlier reconcile that saw a stale list); an error if not."""
        namespace = rollout.metadata.namespace or "default"
        existing = self.store.get("AnalysisRun", action.name, namespace)
        if existing is not None and _is_run_for(existing, rollout, action):
            return
        raise AlreadyExistsError(
            f'AnalysisRun "{action.name}" already exists and does not belong to {action.kind} analysis '
            f'of rollout "{rollout.metadata.name}": delete it or rename the rollout'
        )

    async def _terminate_run(self, namespace: str, name: str) -> None:
        def change(run: dict[str, Any]) -> None:
            run.setdefault("spec", {})["terminate"] = True

        await self.store.mutate("AnalysisRun", name, namespace, change)

    # --- status ----------------------------------------------------------------------------

    async def _write_status(self, raw: dict[str, Any], status: RolloutStatus) -> bool:
        new = status.to_json()
        if raw.get("status") == new:
            return False
        raw = dict(raw)
        raw["status"] = new
        await self.store.update_status(raw)
        return True

    async def _write_invalid(self, raw: dict[str, Any], message: str) -> Outcome:
        status = dict(raw.get("status") or {})
        status["phase"] = "Degraded"
        status["message"] = f"InvalidSpec: {message}"
        if raw.get("status") == status:
            return Outcome(None, False)
        raw = dict(raw)
        raw["status"] = status
        await self.store.update_status(raw)
        return Outcome(None, True)

    async def _collect_garbage(self, namespace: str, name: str) -> None:
        """The rollout is gone: delete what it owned. Not on a cluster: its garbage collector does
        that by owner references, and a rollout missing from this controller's caches may be
        another controller's (--instance-id), whose ReplicaSets are not ours to delete."""
        if getattr(self.platform, "garbage_collects_owned", False):
            return
        for kind in ("ReplicaSet", "AnalysisRun"):
            # Through the owner index: listing the namespace decoded every ReplicaSet and run
            # of every rollout (O(rollouts) per deletion at scale).
            for obj in self.store.list(kind, namespace, owner=("Rollout", name)):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(o.get("kind") == "Rollout" and o.get("name") == name for o in owners):
                    await self.store.delete(kind, obj["metadata"]["name"], namespace)


_SLOTS = (
    ("canary", "currentStepAnalysisRunStatus"),
    ("canary", "currentBackgroundAnalysisRunStatus"),
    ("blueGreen", "prePromotionAnalysisRunStatus"),
    ("blueGreen", "postPromotionAnalysisRunStatus"),
)


def _slot_names(status: dict[str, Any]) -> set[str]:
    """Run names recorded in a rollout status (as stored, camelCase)."""
    names = set()
    for group, slot in _SLOTS:
        entry = (status.get(group) or {}).get(slot) or {}
        if entry.get("name"):
            names.add(str(entry["name"]))
    return names


def _rename_slot(status: RolloutStatus, old: str, new: str) -> None:
    slots = [
        status.canary.current_step_analysis_run_status if status.canary else None,
        status.canary.current_background_analysis_run_status if status.canary else None,
        status.blue_green.pre_promotion_analysis_run_status if status.blue_green else None,
        status.blue_green.post_promotion_analysis_run_status if status.blue_green else None,
    ]
    for slot in slots:
        if slot is not None and slot.name == old:
            slot.name = new


def _unfinished(run: dict[str, Any]) -> bool:
    phase = (run.get("status") or {}).get("phase") or "Pending"
    return phase in ("Pending", "Running") and not (run.get("spec") or {}).get("terminate")


def _is_run_for(run: dict[str, Any], rollout: Rollout, action: p.CreateAnalysisRun) -> bool:
    """Whether `run` is the run `action` asks for: owned by this rollout (same uid), same kind,
    revision hash and step."""
    meta = run.get("metadata") or {}
    labels = meta.get("labels") or {}
    owners = meta.get("ownerReferences") or []
    uid = rollout.metadata.uid or ""
    step = str(action.step_index) if action.step_index is not None else None
    return (
        any(o.get("kind") == "Rollout" and o.get("uid", "") == uid for o in owners)
        and labels.get(ROLLOUT_LABEL) == rollout.metadata.name
        and labels.get(RUN_TYPE_LABEL) == action.kind
        and labels.get(HASH_LABEL) == action.pod_hash
        and labels.get(STEP_INDEX_LABEL) == step
    )
