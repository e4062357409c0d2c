"""The per-reconcile context shared by the canary and blue/green planners.

Like Argo's `rolloutContext`, it holds what was observed (the rollout, its ReplicaSets and
AnalysisRuns, `now`) and what this reconcile decides (the new status and the actions). The
strategy modules are linear pipelines over it; everything here is pure.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from rollouts.core import defaults
from rollouts.core.durations import format_duration
from rollouts.core.hashing import HASH_LABEL, pod_template_hash
from rollouts.core.plan import (
    CreateAnalysisRun,
    CreateReplicaSet,
    DeleteReplicaSet,
    Plan,
    ReplicaSetView,
    RunView,
    ScaleReplicaSet,
    SetRevision,
    SetScaleDownDeadline,
    Snapshot,
    TerminateAnalysisRun,
    UpdateOutcome,
)
from rollouts.core.timeutil import parse_rfc3339, to_rfc3339
from rollouts.model.clone import deep_copy
from rollouts.model.rollout import (
    CanaryStrategy,
    PauseCondition,
    Rollout,
    RolloutAnalysis,
    RolloutAnalysisRunStatus,
    RolloutDuration,
    RolloutStatus,
    TrafficRouting,
)

# Pause reasons (reference c: the code's names, not the spec doc's).
PAUSE_CANARY_STEP = "CanaryPauseStep"
PAUSE_BLUE_GREEN = "BlueGreenPause"
PAUSE_INCONCLUSIVE = "InconclusiveAnalysisRun"

# status.duration.completionStatus of an update back to an older revision than the stable.
ROLLED_BACK = "RolledBack"
# ... of an update in flight that a newer template replaced (reported, never kept in status).
SUPERSEDED = "Superseded"
# Event recorded for it (not one of Argo's reasons: Argo only counts it in a metric).
SUPERSEDED_REASON = "RolloutSuperseded"


class Reconcile:
    """Inputs and outputs of one reconcile of one rollout."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.rollout: Rollout = snap.rollout
        self.now: datetime = snap.now
        # This reconcile's status, planned in place; the observed one stays as read (several
        # steps compare the two). `deep_copy` is `model_copy(deep=True)` without its cost.
        self.status: RolloutStatus = deep_copy(snap.rollout.status or RolloutStatus())
        if self.status.promote_full and self.status.abort:
            # Argo: a full promotion removes the abort; the update goes straight to the new version.
            self.status.abort = None
            self.status.aborted_at = None
        self.plan = Plan(self.status)
        self.replicas = defaults.replicas(self.rollout)
        template = self.rollout.spec.template
        self.template: dict[str, Any] = template.to_json() if template else {}
        self.new_hash = pod_template_hash(self.template, self.status.collision_count or 0)
        self.new_rs = snap.rs_by_hash(self.new_hash)
        self.stable_hash = self.status.stable_rs
        self.stable_rs = snap.rs_by_hash(self.stable_hash)
        self._deadlines: dict[str, datetime | None] = {}
        # Built once per reconcile (they were built 2-3 times each): both are shallow copies of
        # the observed spec, which no planning step assigns to, and `planning_rollout` holds
        # `self.status` itself (never replaced), so a later call saw the same objects anyway.
        self._canary_strategy: CanaryStrategy | None = None
        self._planning_rollout: Rollout | None = None

    # --- strategy as planned ---------------------------------------------------------------

    def canary_strategy(self) -> CanaryStrategy:
        """The canary strategy, with an (empty) trafficRouting when the platform routes traffic itself."""
        if self._canary_strategy is not None:
            return self._canary_strategy
        canary = self.rollout.spec.strategy.canary
        assert canary is not None
        if canary.traffic_routing is None and self.snap.implicit_router:
            canary = canary.model_copy(update={"traffic_routing": TrafficRouting()})
        self._canary_strategy = canary
        return canary

    def planning_rollout(self) -> Rollout:
        """The rollout as the replica arithmetic must see it: this reconcile's status, the planned strategy."""
        if self._planning_rollout is not None:
            return self._planning_rollout
        strategy = self.rollout.spec.strategy
        if strategy.canary is not None:
            strategy = strategy.model_copy(update={"canary": self.canary_strategy()})
        spec = self.rollout.spec.model_copy(update={"strategy": strategy})
        self._planning_rollout = self.rollout.model_copy(update={"spec": spec, "status": self.status})
        return self._planning_rollout

    # --- names -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.rollout.metadata.name

    def rs_name(self, pod_hash: str) -> str:
        return f"{self.name}-{pod_hash}"

    def new_revision(self) -> int:
        if self.new_rs is not None:
            return self.new_rs.revision
        return max((rs.revision for rs in self.snap.replica_sets), default=0) + 1

    def others(self, *keep: str | None) -> list[ReplicaSetView]:
        return [rs for rs in self.snap.replica_sets if rs.pod_hash not in keep]

    # --- replica sets ----------------------------------------------------------------------

    def ensure_new_rs(self, replicas: int) -> ReplicaSetView:
        """The ReplicaSet of the current template, created (at `replicas`) if missing."""
        if self.new_rs is not None:
            return self.new_rs
        revision = self.new_revision()
        template = json.loads(json.dumps(self.template))
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels[HASH_LABEL] = self.new_hash
        name = self.rs_name(self.new_hash)
        self.plan.actions.append(CreateReplicaSet(name, self.new_hash, revision, replicas, template))
        self.plan.event("NewReplicaSetCreated", f"Created ReplicaSet {name} (revision {revision}) with size {replicas}")
        self.new_rs = ReplicaSetView(name, self.new_hash, revision, replicas, 0, 0, template)
        return self.new_rs

    def scale(self, rs: ReplicaSetView | None, replicas: int) -> None:
        if rs is None or rs.replicas == replicas:
            return
        self.plan.actions.append(ScaleReplicaSet(rs.name, replicas))
        direction = "up" if replicas > rs.replicas else "down"
        self.plan.event(
            "ScalingReplicaSet",
            f"Scaled {direction} ReplicaSet {rs.name} (revision {rs.revision}) from {rs.replicas} to {replicas}",
        )

    def scale_down_old(self, keep: tuple[str | None, ...], revision_limit: int | None = None) -> None:
        """Old ReplicaSets go to 0 at once, except those marked with a scale-down deadline.

        Only a stable that was just replaced is marked (`delay_scale_down`), as in Argo, so a
        superseded canary goes at once while the old stable stays up for a quick rollback.
        `revision_limit` (scaleDownDelayRevisionLimit) caps how many marked ones linger.
        """
        lingering = sorted(
            (rs for rs in self.others(*keep) if rs.replicas > 0), key=lambda rs: rs.revision, reverse=True
        )
        marked = 0
        for rs in lingering:
            deadline = self._deadlines.get(rs.name, rs.scale_down_at)
            if deadline is None:
                self.scale(rs, 0)
                continue
            marked += 1
            if deadline <= self.now or (revision_limit is not None and marked > revision_limit):
                self.scale(rs, 0)
                self.plan.actions.append(SetScaleDownDeadline(rs.name, None))
            else:
                self.plan.requeue((deadline - self.now).total_seconds())

    def delay_scale_down(self, rs: ReplicaSetView | None, delay_seconds: int) -> None:
        """Keep a replaced stable up for `delay_seconds` (scale-down-deadline annotation); 0 = scale it down now."""
        if rs is None or delay_seconds <= 0:
            return
        at = self.now + timedelta(seconds=delay_seconds)
        self._deadlines[rs.name] = at
        self.plan.actions.append(SetScaleDownDeadline(rs.name, at))
        self.plan.requeue(delay_seconds)

    def cancel_scale_down(self, rs: ReplicaSetView | None) -> None:
        if rs is not None and self._deadlines.get(rs.name, rs.scale_down_at) is not None:
            self._deadlines[rs.name] = None
            self.plan.actions.append(SetScaleDownDeadline(rs.name, None))

    def trim_history(self, keep: tuple[str | None, ...]) -> None:
        """Delete idle old ReplicaSets beyond revisionHistoryLimit, oldest first."""
        idle = sorted(
            (rs for rs in self.others(*keep) if rs.replicas == 0 and rs.available == 0), key=lambda rs: rs.revision
        )
        excess = len(idle) - defaults.revision_history_limit(self.rollout)
        for rs in idle[: max(0, excess)]:
            self.plan.actions.append(DeleteReplicaSet(rs.name))

    # --- pauses ----------------------------------------------------------------------------

    def pause_condition(self, reason: str) -> PauseCondition | None:
        return next((c for c in self.status.pause_conditions or [] if c.reason == reason), None)

    def add_pause(self, reason: str) -> PauseCondition:
        existing = self.pause_condition(reason)
        if existing is not None:
            return existing
        condition = PauseCondition(reason=reason, start_time=to_rfc3339(self.now))
        self.status.pause_conditions = [*(self.status.pause_conditions or []), condition]
        self.status.controller_pause = True
        self.plan.event("RolloutPaused", f"Rollout is paused ({reason})")
        return condition

    def clear_pauses(self) -> None:
        self.status.pause_conditions = None
        self.status.controller_pause = None

    def pause_started(self, condition: PauseCondition) -> datetime:
        return parse_rfc3339(condition.start_time) or self.now

    def user_resumed(self) -> bool:
        """Promote clears pauseConditions but leaves controllerPause: the pause is over."""
        return bool(self.status.controller_pause) and not self.status.pause_conditions

    # --- analysis --------------------------------------------------------------------------

    def run_name(self, suffix: str | None) -> str:
        base = f"{self.name}-{self.new_hash}-{self.new_revision()}"
        return base if suffix is None else f"{base}-{suffix}"

    def run(self, name: str) -> RunView | None:
        return next((r for r in self.snap.runs if r.name == name), None)

    def ensure_run(
        self, current: str | None, kind: str, analysis: RolloutAnalysis, suffix: str | None, step: int | None
    ) -> tuple[str, RunView | None]:
        """The run this rollout currently tracks in a status slot, or a new one.

        `current` is the run name recorded in status. With none recorded, a run is created
        under Argo's name (`<rollout>-<hash>-<revision>[-<suffix>]`), with `.N` added when a
        run of that name exists already (e.g. the failed run of an update that was retried).
        Returns (name, the observed run or None while it is not yet observed).
        """
        if current is not None:
            run = self.run(current)
            # A run that failed aborted the update when it was recorded so; seen again with the
            # abort gone (retry), it is history and the analysis starts over with a new run.
            if run is None or run.phase not in ("Failed", "Error") or not self._recorded_failed(current):
                return current, run
        base = self.run_name(suffix)
        name = base
        taken = {r.name for r in self.snap.runs}
        attempt = 0
        while name in taken:
            attempt += 1
            name = f"{base}.{attempt}"
        metadata = analysis.analysis_run_metadata
        self.plan.actions.append(
            CreateAnalysisRun(
                name=name,
                kind=kind,
                pod_hash=self.new_hash,
                revision=self.new_revision(),
                step_index=step,
                templates=tuple(analysis.templates or ()),
                args=tuple(self.resolve_args(analysis)),
                dry_run=tuple(analysis.dry_run or ()),
                measurement_retention=tuple(analysis.measurement_retention or ()),
                labels=tuple(sorted(((metadata and metadata.labels) or {}).items())),
                annotations=tuple(sorted(((metadata and metadata.annotations) or {}).items())),
            )
        )
        self.plan.event("AnalysisRunCreated", f"Created {kind} AnalysisRun {name}")
        return name, None

    def _recorded_failed(self, name: str) -> bool:
        """Whether the status read this reconcile recorded run `name` as Failed/Error (already acted on)."""
        status = self.snap.rollout.status
        if status is None or status.abort:
            return False
        slots = (
            status.canary.current_step_analysis_run_status if status.canary else None,
            status.canary.current_background_analysis_run_status if status.canary else None,
            status.blue_green.pre_promotion_analysis_run_status if status.blue_green else None,
            status.blue_green.post_promotion_analysis_run_status if status.blue_green else None,
        )
        return any(slot is not None and slot.name == name and slot.status in ("Failed", "Error") for slot in slots)

    def resolve_args(self, analysis: RolloutAnalysis) -> list[tuple[str, str]]:
        """Rollout-side args: plain values, podTemplateHashValue, or a fieldRef into the rollout."""
        resolved: list[tuple[str, str]] = []
        for arg in analysis.args or []:
            if arg.value is not None:
                resolved.append((arg.name, arg.value))
            elif arg.value_from is not None and arg.value_from.pod_template_hash_value is not None:
                which = arg.value_from.pod_template_hash_value
                resolved.append((arg.name, (self.stable_hash or "") if which == "Stable" else self.new_hash))
            elif arg.value_from is not None and arg.value_from.field_ref is not None:
                value = _field_path(self.rollout.to_json(), arg.value_from.field_ref.field_path)
                if value is not None:
                    resolved.append((arg.name, value))
        return resolved

    def terminate_runs(self, keep: set[str] | None = None) -> None:
        for run in self.snap.runs:
            if run.completed or run.terminating or (keep and run.name in keep):
                continue
            self.plan.actions.append(TerminateAnalysisRun(run.name))

    def consume_run(self, run: RunView | None, label: str) -> bool:
        """Map a run's phase onto the rollout (reference b.7): True when the analysis passed.

        Failed/Error aborts (the strategy unwinds in the same reconcile); Inconclusive pauses.
        """
        if run is None:
            return False
        if run.phase == "Successful":
            return True
        if run.phase in ("Failed", "Error"):
            detail = f"{label} analysis phase {run.phase.lower()}: {run.message}".rstrip(": ")
            self.abort(f"RolloutAborted: Rollout aborted update to revision {self.new_revision()}: {detail}")
            self.plan.requeue(0)
        elif run.phase == "Inconclusive":
            self.add_pause(PAUSE_INCONCLUSIVE)
        return False

    @staticmethod
    def run_status(name: str, run: RunView | None) -> RolloutAnalysisRunStatus:
        phase = run.phase if run is not None else "Pending"
        message = (run.message or None) if run is not None else None
        return RolloutAnalysisRunStatus(name=name, status=phase, message=message)

    # --- outcome ---------------------------------------------------------------------------

    def start_update(self) -> None:
        """A new revision became current: reset step progress and start the clock.

        When the template is an older revision's (undo), that ReplicaSet takes the next
        revision number. It is a rollback when that revision is older than the stable's; like
        Argo's isRollbackWithinWindow, one with fewer than `rollbackWindow.revisions` revisions
        between it and the stable skips its steps and analysis (an unpromoted revision newer
        than the stable never does). A rollback ends RolledBack / FastRolledBack.
        """
        newest = max((rs.revision for rs in self.snap.replica_sets), default=0)
        fast_track = rollback = False
        if self.new_rs is not None and self.new_rs.revision < newest:
            window = self.rollout.spec.rollback_window.revisions if self.rollout.spec.rollback_window else None
            stable = self.stable_rs.revision if self.stable_rs is not None else 0
            rollback = self.new_rs.revision < stable
            between = {rs.revision for rs in self.snap.replica_sets if self.new_rs.revision < rs.revision < stable}
            fast_track = rollback and window is not None and len(between) < window
            self.plan.actions.append(SetRevision(self.new_rs.name, newest + 1))
            self.new_rs = replace(self.new_rs, revision=newest + 1)
        previous = self.status.current_pod_hash
        self.status.current_pod_hash = self.new_hash
        self.status.current_step_index = 0 if self.has_steps() else None
        self.status.abort = None
        self.status.aborted_at = None
        self.status.promote_full = None
        self.clear_pauses()
        if self.status.canary is not None:
            # The runs of the superseded revision are not this update's.
            self.status.canary.current_step_analysis_run_status = None
            self.status.canary.current_background_analysis_run_status = None
        duration = self.status.duration
        # The update a rollback undoes: the one in flight, or one just aborted (abort, then undo).
        undone = (
            duration if duration and (not duration.finished_at or duration.completion_status == "Aborted") else None
        )
        if previous is not None and self.stable_hash is not None and previous != self.stable_hash:
            self._supersede(previous)
        started = to_rfc3339(self.now)
        if rollback and undone is not None and undone.rollout_started_at:
            started = undone.rollout_started_at  # Argo: a rollback keeps the original start time
        # A rollback's outcome is known from the start (Argo keeps it pending, without finishedAt).
        self.status.duration = RolloutDuration(
            rollout_started_at=started, completion_status=ROLLED_BACK if rollback else None
        )
        self.plan.event("RolloutUpdated", f"Rollout updated to revision {self.new_revision()}")
        if fast_track:
            self.status.promote_full = True
            self.plan.event("SkipSteps", "Rollback is within the rollback window: skipping steps and analysis")

    def has_steps(self) -> bool:
        canary = self.rollout.spec.strategy.canary
        return canary is not None

    def finish(self, completion: str) -> None:
        """Record how the update in flight ended, once: in status.duration and in the plan's outcomes."""
        duration = self.status.duration or RolloutDuration()
        if duration.completion_status is not None and duration.finished_at is not None:
            return
        if duration.completion_status == ROLLED_BACK:
            # A rollback that completes is RolledBack (FastRolledBack when its steps were skipped).
            completion = {"Promoted": ROLLED_BACK, "FastPromoted": "FastRolledBack"}.get(completion, completion)
        duration.finished_at = to_rfc3339(self.now)
        duration.completion_status = completion
        self.status.duration = duration
        started = parse_rfc3339(duration.rollout_started_at)
        self.plan.outcomes.append(UpdateOutcome(self.new_revision(), completion, started, self.now))

    def _supersede(self, previous_hash: str) -> None:
        """A new template replaced the update in flight (revision of `previous_hash`): it ends
        Superseded. Its status.duration gives way to the new update's, so the outcome is only
        reported (the plan's outcomes, and an event saying how long it ran)."""
        duration = self.status.duration
        if duration is None or duration.finished_at is not None:
            return  # no update in flight (it had ended: promoted, aborted)
        previous = self.snap.rs_by_hash(previous_hash)
        revision = previous.revision if previous is not None else 0
        outcome = UpdateOutcome(revision, SUPERSEDED, parse_rfc3339(duration.rollout_started_at), self.now)
        self.plan.outcomes.append(outcome)
        ran = f" after {format_duration(outcome.seconds)}" if outcome.seconds is not None else ""
        self.plan.event(
            SUPERSEDED_REASON,
            f"Update to revision {revision} superseded by revision {self.new_revision()}{ran}",
        )

    def reopen_after_retry(self) -> None:
        """A retried update (abort cleared by the user) is in flight again: its outcome is open,
        and its clock restarts (as Argo's DurationSuite checks)."""
        duration = self.status.duration
        if duration is not None and duration.completion_status == "Aborted" and not self.status.abort:
            self.status.duration = RolloutDuration(rollout_started_at=to_rfc3339(self.now))

    def abort(self, message: str) -> None:
        """Abort the update: the strategies route traffic back to stable on this same reconcile."""
        if self.status.abort:
            return
        self.status.abort = True
        self.status.aborted_at = to_rfc3339(self.now)
        self.status.message = message
        self.plan.event("RolloutAborted", message.removeprefix("RolloutAborted: "), "Warning")

    def note_abort(self) -> None:
        """An abort written by a user (status.abort) gets its time and Argo's message on first sight."""
        if self.status.aborted_at is None:
            self.status.aborted_at = to_rfc3339(self.now)
            self.plan.event("RolloutAborted", f"Rollout aborted update to revision {self.new_revision()}", "Warning")
        if not (self.status.message or "").startswith("RolloutAborted"):
            self.status.message = f"RolloutAborted: Rollout aborted update to revision {self.new_revision()}"

    def aborted_since(self) -> datetime:
        return parse_rfc3339(self.status.aborted_at) or self.now


def _field_path(document: dict[str, Any], path: str) -> str | None:
    """Walk `metadata.labels['env']` / `spec.template.metadata.labels.version` to a primitive."""
    node: Any = document
    for part in _split_path(path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    if isinstance(node, dict | list) or node is None:
        return None
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _split_path(path: str) -> list[str]:
    parts: list[str] = []
    buf = ""
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == ".":
            if buf:
                parts.append(buf)
            buf = ""
        elif ch == "[":
            if buf:
                parts.append(buf)
            end = path.index("]", i)
            parts.append(path[i + 1 : end].strip("'\""))
            buf = ""
            i = end
        else:
            buf += ch
        i += 1
    if buf:
        parts.append(buf)
    return parts
