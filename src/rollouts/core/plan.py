"""The planning core's inputs and outputs.

A reconcile observes a `Snapshot` (the rollout, its ReplicaSets, its AnalysisRuns, the time)
and the strategy planners return a `Plan`: the new status and the `Action`s that make the
platform match it. Planners are pure; the controller carries out actions through platform
adapters, then writes the status once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollouts.core.routes import ActiveRoute
from rollouts.model.rollout import AnalysisTemplateRef, DryRun, MeasurementRetention, Rollout, RolloutStatus

# AnalysisRun kinds, as in the `rollout-type` label.
RUN_STEP = "Step"
RUN_BACKGROUND = "Background"
RUN_PRE = "PrePromotion"
RUN_POST = "PostPromotion"


@dataclass(frozen=True)
class PodView:
    """One pod of a ReplicaSet, as far as restarts need it."""

    name: str
    created: datetime
    ready: bool
    # Being deleted or replaced (deletionTimestamp, or a restart requested on the embedded platform).
    terminating: bool = False
    # Sorted (key, value) pairs; ephemeral metadata compares them with the role's metadata.
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class EphemeralMetadata:
    """Role labels/annotations injected into a ReplicaSet's pods (canaryMetadata, stableMetadata,
    previewMetadata, activeMetadata), as sorted (key, value) pairs."""

    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.labels and not self.annotations


@dataclass(frozen=True)
class ReplicaSetView:
    name: str
    pod_hash: str
    revision: int
    replicas: int
    ready: int
    available: int
    template: dict[str, Any]
    scale_down_at: datetime | None = None
    # The ReplicaSet's pods, listed by the platforms while a restart is pending
    # (`restart.restart_pending`): restartAt compares their creation times. Also listed while
    # ephemeral metadata is in use (`metadata.wants_pods`): their labels/annotations are checked.
    pods: tuple[PodView, ...] = ()
    # What the `rollout.argoproj.io/ephemeral-metadata` annotation records as injected (None: absent).
    ephemeral: EphemeralMetadata | None = None


@dataclass(frozen=True)
class RunView:
    name: str
    kind: str
    pod_hash: str
    step_index: int | None
    phase: str
    message: str = ""
    terminating: bool = False
    # metadata.creationTimestamp: the run history limits delete the oldest completed runs first.
    created: datetime | None = None

    @property
    def completed(self) -> bool:
        return self.phase in ("Successful", "Failed", "Error", "Inconclusive")


@dataclass(frozen=True)
class Snapshot:
    rollout: Rollout
    replica_sets: tuple[ReplicaSetView, ...]
    runs: tuple[RunView, ...]
    now: datetime
    invalid_spec: str | None = None
    # The platform splits traffic by weight even without spec.trafficRouting (the embedded
    # proxy): such a canary is planned as traffic-routed.
    implicit_router: bool = False

    def rs_by_hash(self, pod_hash: str | None) -> ReplicaSetView | None:
        if pod_hash is None:
            return None
        return next((rs for rs in self.replica_sets if rs.pod_hash == pod_hash), None)


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateReplicaSet:
    name: str
    pod_hash: str
    revision: int
    replicas: int
    template: dict[str, Any]


@dataclass(frozen=True)
class ScaleReplicaSet:
    name: str
    replicas: int


@dataclass(frozen=True)
class SetScaleDownDeadline:
    """Mark an old ReplicaSet to be scaled down at `at` (None clears the mark)."""

    name: str
    at: datetime | None


@dataclass(frozen=True)
class SetRevision:
    """An old ReplicaSet that becomes current again (undo) takes the next revision number."""

    name: str
    revision: int


@dataclass(frozen=True)
class DeleteReplicaSet:
    name: str


@dataclass(frozen=True)
class PointService:
    """Select the pods of revision `pod_hash` behind `service`."""

    service: str
    pod_hash: str


@dataclass(frozen=True)
class SetCanaryWeight:
    """Send `weight` % of the stable service's traffic to the canary service's pods, and apply
    the managed routes in effect (`core.routes`; empty = none), in precedence order.

    One field for both kinds of route, not one per kind: precedence runs across them (a mirror
    route listed first in managedRoutes wins over a header route for a request both match)."""

    stable_service: str
    canary_service: str | None
    canary_hash: str
    weight: int
    routes: tuple[ActiveRoute, ...] = ()


@dataclass(frozen=True)
class CreateAnalysisRun:
    name: str
    kind: str
    pod_hash: str
    revision: int
    step_index: int | None
    templates: tuple[AnalysisTemplateRef, ...]
    args: tuple[tuple[str, str], ...]
    dry_run: tuple[DryRun, ...] = ()
    measurement_retention: tuple[MeasurementRetention, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TerminateAnalysisRun:
    name: str


@dataclass(frozen=True)
class DeleteAnalysisRun:
    """A completed run beyond spec.analysis.(un)successfulRunHistoryLimit."""

    name: str


@dataclass(frozen=True)
class RestartPod:
    """Delete (evict) a pod created before spec.restartAt; its ReplicaSet replaces it."""

    name: str


@dataclass(frozen=True)
class SetEphemeralMetadata:
    """Make ReplicaSet `name`'s pod template and pods carry `wanted` (the role's metadata) and no
    longer carry the previously injected keys `remove_labels`/`remove_annotations`; the
    ReplicaSet's bookkeeping annotation then records `wanted` (see `core.metadata`)."""

    name: str
    wanted: EphemeralMetadata
    remove_labels: tuple[str, ...] = ()
    remove_annotations: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordEvent:
    type: str
    reason: str
    message: str


Action = (
    CreateReplicaSet
    | ScaleReplicaSet
    | SetScaleDownDeadline
    | SetRevision
    | DeleteReplicaSet
    | PointService
    | SetCanaryWeight
    | CreateAnalysisRun
    | TerminateAnalysisRun
    | DeleteAnalysisRun
    | RestartPod
    | SetEphemeralMetadata
    | RecordEvent
)


@dataclass(frozen=True)
class UpdateOutcome:
    """An update that ended in this reconcile: its revision (for a rollback, the revision it
    returned to), how it ended (a status.duration.completionStatus), when it started and ended.

    Every outcome is also in status.duration except `Superseded`: the superseding update's
    duration replaces it there, so this is the only place the controller learns of it (Argo
    reports it as a duration metric only)."""

    revision: int
    completion_status: str
    started_at: datetime | None
    finished_at: datetime

    @property
    def seconds(self) -> float | None:
        """How long the update ran, or None when its start is not known."""
        if self.started_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


@dataclass
class Plan:
    status: RolloutStatus
    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None
    # Updates that ended in this reconcile (the controller counts them in its metrics).
    outcomes: list[UpdateOutcome] = field(default_factory=list)

    def requeue(self, seconds: float) -> None:
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = max(0.0, seconds)

    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.actions.append(RecordEvent(type_, reason, message))
