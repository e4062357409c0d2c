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


# Progressing reasons under which an update waits for its next progress (the deadline runs
# from the condition's lastUpdateTime).
_WAITING_REASONS = (
    "ReplicaSetUpdated",
    "RolloutResumed",
    "RolloutRetry",
    "ReplicaSetNotAvailable",
    progress.REASON,
)


def _conditions(ctx: Reconcile) -> None:
    """Argo's checkPausedConditions and calculateRolloutConditions, over this reconcile's status.

    Available, Progressing and Completed are always set. Paused and Healthy are added only once
    they first hold, then flip between True and False (Argo's code). Progressing passes through
    Unknown `RolloutResumed` when a pause ends and `RolloutRetry` when an abort is retried, and
    keeps that reason until the update makes progress again.
    """
    status = ctx.status
    prior = _condition(status, "Progressing")
    paused = bool(status.pause_conditions) or bool(ctx.rollout.spec.paused)
    became_unhealthy = _healthy_condition(ctx, paused)
    available = _available(ctx)
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
    elif paused:
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
        _progressing(ctx, became_unhealthy)
    # Argo leaves Paused alone while the Progressing condition says RolloutAborted (so an abort at
    # a pause keeps Paused True until the retry is under way).
    aborted = bool(status.abort) or (prior is not None and prior.reason == "RolloutAborted")
    existing = _condition(status, "Paused")
    if paused != (existing is not None and existing.status == "True") and not aborted:
        # One reason and message either way, as Argo writes them.
        _set_condition(ctx, "Paused", "True" if paused else "False", "RolloutPaused", "Rollout is paused")
    completed = bool(status.stable_rs) and status.stable_rs == ctx.new_hash
    _set_condition(
        ctx,
        "Completed",
        "True" if completed else "False",
        "RolloutCompleted",  # Argo: the same reason and message either way (RolloutNotCompleted is an event)
        "RolloutCompleted",
    )


def _condition(status: RolloutStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions or [] if c.type == type_), None)


def _available(ctx: Reconcile) -> bool:
    """Blue/green: the active ReplicaSet is saturated (all its pods available, at full size);
    canary: the rollout's ReplicaSets have at least spec.replicas pods available (Argo)."""
    status = ctx.status
    if ctx.rollout.spec.strategy.blue_green is not None:
        active = ctx.snap.rs_by_hash(status.blue_green.active_selector if status.blue_green else None)
        return active is not None and active.replicas == ctx.replicas and active.available == ctx.replicas
    return (status.available_replicas or 0) >= ctx.replicas


def _healthy_condition(ctx: Reconcile, paused: bool) -> bool:
    """Set the Healthy condition; True when it turned from True to False in this reconcile."""
    if not paused and _healthy(ctx):
        _set_condition(ctx, "Healthy", "True", "RolloutHealthy", "Rollout is healthy")
        return False
    existing = _condition(ctx.status, "Healthy")
    if existing is None:
        return False  # not added before the rollout is first healthy
    _set_condition(ctx, "Healthy", "False", "RolloutHealthy", "Rollout is not healthy")
    return existing.status == "True"


def _healthy(ctx: Reconcile) -> bool:
    """Argo's RolloutHealthy: every pod updated and available, no other pods (canary), the spec
    observed, and the strategy done (all steps and the stable promoted; blue/green: the Services
    on the current revision)."""
    status = ctx.status
    replicas = ctx.replicas
    generation = ctx.rollout.metadata.generation
    observed = ctx.snap.rollout.status
    seen = observed is not None and observed.observed_generation == (
        str(generation) if generation is not None else None
    )
    blue_green = ctx.rollout.spec.strategy.blue_green
    canary = ctx.rollout.spec.strategy.canary
    done = True
    if blue_green is not None:
        selectors = status.blue_green
        active = selectors is not None and selectors.active_selector == status.current_pod_hash
        preview = not blue_green.preview_service or (
            selectors is not None and selectors.preview_selector == status.current_pod_hash
        )
        done = active and preview
    elif canary is not None:
        steps = len(canary.steps or [])
        index = status.current_step_index
        all_steps = steps == 0 or index is None or index == steps
        promoted = bool(status.stable_rs) and status.stable_rs == status.current_pod_hash
        done = all_steps and promoted and (status.replicas or 0) == replicas
    return (status.updated_replicas or 0) == replicas and (status.available_replicas or 0) == replicas and seen and done


def _progressing(ctx: Reconcile, became_unhealthy: bool) -> None:
    """An update in flight: record progress, or declare the progress deadline exceeded."""
    status = ctx.status
    rs_name = ctx.rs_name(ctx.new_hash)
    current = _condition(status, "Progressing")
    # Argo's checkPausedConditions: the pause is over, or the abort was retried. The deadline then
    # runs from this moment, not from the progress made before the pause or the abort.
    if current is not None and current.reason in ("RolloutPaused", "RolloutAborted"):
        resumed = current.reason == "RolloutPaused"
        _set_condition(
            ctx,
            "Progressing",
            "Unknown",
            "RolloutResumed" if resumed else "RolloutRetry",
            "Rollout is resumed" if resumed else "Retrying Rollout after abort",
        )
        current = _condition(status, "Progressing")
    moved = progress.fingerprint(ctx.snap.rollout.status) != progress.fingerprint(status)
    if became_unhealthy and status.stable_rs == ctx.new_hash:
        # A promoted rollout lost pods (restarts, evictions): progressing again, deadline reset.
        message = "Rollout does not have minimum availability"
        _set_condition(ctx, "Progressing", "True", "ReplicaSetNotAvailable", message, touch=True)
        return
    if current is None or moved or current.reason not in _WAITING_REASONS:
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
