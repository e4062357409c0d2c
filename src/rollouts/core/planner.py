"""Entry point of the planning core: one pure function from a Snapshot to a Plan.

`plan(snapshot)` runs the strategy pipeline, then fills in what every strategy shares:
replica counts, observedGeneration, conditions and the phase. It performs no I/O and reads
time only from `snapshot.now`, so every behaviour is testable with tables and a fixed clock.
"""

from __future__ import annotations

from rollouts.core import history, metadata, progress, restart
from rollouts.core.bluegreen import plan_blue_green
from rollouts.core.canary import plan_canary
from rollouts.core.context import Reconcile
from rollouts.core.phase import HEALTHY, PROGRESSING, PhaseResult, rollout_phase
from rollouts.core.plan import Plan, Snapshot
from rollouts.core.timeutil import to_rfc3339
from rollouts.model.rollout import Condition, RolloutStatus


def plan(snap: Snapshot) -> Plan:
    ctx = Reconcile(snap)
    status = ctx.status
    if snap.invalid_spec is not None:
        _set_condition(ctx, "InvalidSpec", "True", "InvalidSpec", snap.invalid_spec)
    else:
        _drop_condition(status, "InvalidSpec")
        if ctx.rollout.spec.strategy.blue_green is not None:
            plan_blue_green(ctx)
        elif ctx.rollout.spec.strategy.canary is not None:
            plan_canary(ctx)
        restart.plan_restart(ctx)
        # After the strategy: roles follow this reconcile's status.stableRS and new ReplicaSet.
        metadata.plan_ephemeral_metadata(ctx)
    history.trim_analysis_runs(ctx)
    _replica_counts(ctx)
    generation = ctx.rollout.metadata.generation
    status.observed_generation = str(generation) if generation is not None else None
    _conditions(ctx)
    result = rollout_phase(ctx.planning_rollout(), status)
    if result.phase == HEALTHY and restart.pending(ctx):
        result = PhaseResult(PROGRESSING, "pods are restarting")
    if status.phase != result.phase and result.phase == HEALTHY:
        ctx.plan.event("RolloutHealthy", "Rollout is healthy")
    status.phase = result.phase
    status.message = result.message or None
    return ctx.plan


def _replica_counts(ctx: Reconcile) -> None:
    status = ctx.status
    sets = ctx.snap.replica_sets
    status.replicas = sum(rs.replicas for rs in sets)
    status.ready_replicas = sum(rs.ready for rs in sets)
    status.available_replicas = sum(rs.available for rs in sets)
    status.hpa_replicas = status.replicas
    new = ctx.snap.rs_by_hash(ctx.new_hash)
    status.updated_replicas = new.replicas if new is not None else 0
    selector = ctx.rollout.spec.selector
    labels = (selector.match_labels or {}) if selector else {}
    status.selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None


def _conditions(ctx: Reconcile) -> None:
    status = ctx.status
    available = (status.available_replicas or 0) >= ctx.replicas
    _set_condition(
        ctx,
        "Available",
        "True" if available else "False",
        "AvailableReason",
        "Rollout has minimum availability" if available else "Rollout does not have minimum availability",
    )
    if status.abort:
        # Argo's condition message is the phase message without its "RolloutAborted: " prefix.
        message = (status.message or "Rollout aborted update").removeprefix("RolloutAborted: ")
        _set_condition(ctx, "Progressing", "False", "RolloutAborted", message)
    elif status.pause_conditions or ctx.rollout.spec.paused:
        _set_condition(ctx, "Progressing", "Unknown", "RolloutPaused", "Rollout is paused")
    elif status.stable_rs == ctx.new_hash and (status.available_replicas or 0) >= ctx.replicas:
        _set_condition(
            ctx,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{ctx.rs_name(ctx.new_hash)}" has successfully progressed.',
        )
    else:
        _progressing(ctx)
    paused = bool(status.pause_conditions) or bool(ctx.rollout.spec.paused)
    _set_condition(
        ctx,
        "Paused",
        "True" if paused else "False",
        "RolloutPaused",  # Argo keeps reason and message when the condition turns False
        "Rollout is paused",
    )
    completed = status.stable_rs == ctx.new_hash and not status.abort
    _set_condition(
        ctx,
        "Completed",
        "True" if completed else "False",
        "RolloutCompleted",  # Argo: the same reason and message either way (RolloutNotCompleted is an event)
        "RolloutCompleted",
    )
    healthy = completed and available and not paused
    _set_condition(
        ctx,
        "Healthy",
        "True" if healthy else "False",
        "RolloutHealthy",  # Argo: one reason, two messages
        "Rollout is healthy" if healthy else "Rollout is not healthy",
    )


def _progressing(ctx: Reconcile) -> None:
    """An update in flight: record progress, or declare the progress deadline exceeded."""
    status = ctx.status
    rs_name = ctx.rs_name(ctx.new_hash)
    current = next((c for c in status.conditions or [] if c.type == "Progressing"), None)
    moved = progress.fingerprint(ctx.snap.rollout.status) != progress.fingerprint(status)
    if current is None or moved or current.reason not in ("ReplicaSetUpdated", progress.REASON):
        _set_condition(
            ctx, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', touch=True
        )
        left = progress.seconds_left(ctx, to_rfc3339(ctx.now))
    elif current.reason == progress.REASON:
        return
    else:
        left = progress.seconds_left(ctx, current.last_update_time)
    if left is None:
        return
    if left > 0:
        ctx.plan.requeue(left)
        return
    message = f'ReplicaSet "{rs_name}" has timed out progressing.'
    _set_condition(ctx, "Progressing", "False", progress.REASON, message)
    ctx.plan.event(progress.REASON, message, "Warning")
    if ctx.rollout.spec.progress_deadline_abort and status.stable_rs != ctx.new_hash and not status.abort:
        ctx.abort(f"RolloutAborted: Rollout aborted update to revision {ctx.new_revision()}: {message}")
        ctx.plan.requeue(0)


def _set_condition(ctx: Reconcile, type_: str, value: str, reason: str, message: str, *, touch: bool = False) -> None:
    status: RolloutStatus = ctx.status
    conditions = list(status.conditions or [])
    now = to_rfc3339(ctx.now)
    for index, existing in enumerate(conditions):
        if existing.type != type_:
            continue
        same = existing.status == value and existing.reason == reason and existing.message == message
        if same and not touch:
            return
        transition = existing.last_transition_time if existing.status == value else now
        conditions[index] = Condition(
            type=type_,
            status=value,
            reason=reason,
            message=message,
            last_update_time=now,
            last_transition_time=transition,
        )
        status.conditions = conditions
        return
    conditions.append(
        Condition(
            type=type_, status=value, reason=reason, message=message, last_update_time=now, last_transition_time=now
        )
    )
    status.conditions = conditions


def _drop_condition(status: RolloutStatus, type_: str) -> None:
    if status.conditions and any(c.type == type_ for c in status.conditions):
        status.conditions = [c for c in status.conditions if c.type != type_] or None
