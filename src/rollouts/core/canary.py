"""Canary planning: step progression, weights, replica counts, analysis, promotion, abort.

A linear pipeline in the manner of Argo's `rolloutCanary`: settle the revision, then either
hold the stable revision (initial deploy, fast rollback), unwind an aborted update, or move
the update through its steps. Replica counts come from Argo's exact arithmetic
(`replicas.canary_replica_counts`): traffic-routed when the spec names a router or the
platform routes by weight itself (the embedded proxy), else the basic canary's approximation
of the weight by pod counts within maxSurge/maxUnavailable.
"""

from __future__ import annotations

from datetime import timedelta

from rollouts.core import defaults, routes
from rollouts.core.context import PAUSE_CANARY_STEP, Reconcile
from rollouts.core.durations import DurationError, parse_pause_duration
from rollouts.core.plan import (
    RUN_BACKGROUND,
    RUN_STEP,
    PointService,
    ReplicaSetView,
    SetCanaryWeight,
    SetScaleDownDeadline,
)
from rollouts.core.replicas import (
    ReplicaSetCounts,
    at_desired_replica_counts,
    canary_replica_counts,
    current_set_weight,
)
from rollouts.model.rollout import (
    CanaryStatus,
    CanaryStep,
    CanaryStrategy,
    TrafficWeights,
    WeightDestination,
)


def plan_canary(ctx: Reconcile) -> None:
    canary = ctx.canary_strategy()
    steps = canary.steps or []
    status = ctx.status
    if status.current_pod_hash != ctx.new_hash:
        if ctx.stable_hash is not None and ctx.new_hash != ctx.stable_hash:
            ctx.start_update()
        else:
            status.current_pod_hash = ctx.new_hash
    if ctx.stable_hash is None or ctx.new_hash == ctx.stable_hash:
        _hold_stable(ctx, canary, steps)
        return
    ctx.ensure_new_rs(0)
    if status.abort:
        _unwind_abort(ctx, canary)
        return
    ctx.reopen_after_retry()
    _progress(ctx, canary, steps)


def _services(
    ctx: Reconcile,
    canary: CanaryStrategy,
    stable_hash: str,
    canary_hash: str,
    weight: int,
    active: tuple[routes.ActiveRoute, ...] = (),
) -> None:
    """Pin the Services to their revisions and, with a router, set the canary's share of traffic
    and the managed routes in effect (none unless an update is progressing: see `routes`)."""
    if canary.stable_service:
        ctx.plan.actions.append(PointService(canary.stable_service, stable_hash))
        if canary.traffic_routing is not None:
            ctx.plan.actions.append(
                SetCanaryWeight(canary.stable_service, canary.canary_service, canary_hash, weight, active)
            )
    if canary.canary_service:
        ctx.plan.actions.append(PointService(canary.canary_service, canary_hash))
    ctx.status.canary = ctx.status.canary or CanaryStatus()
    ctx.status.canary.weights = TrafficWeights(
        canary=WeightDestination(weight=weight, service_name=canary.canary_service, pod_template_hash=canary_hash),
        stable=WeightDestination(
            weight=100 - weight, service_name=canary.stable_service, pod_template_hash=stable_hash
        ),
        verified=True,
    )


def _counts(rs: ReplicaSetView | None) -> ReplicaSetCounts | None:
    return None if rs is None else ReplicaSetCounts(rs.name, rs.replicas, rs.available)


def _observed_weight(ctx: Reconcile, canary_hash: str) -> int:
    """Without a router, traffic follows the pods: the canary's share of available pods."""
    canary_rs = ctx.snap.rs_by_hash(canary_hash)
    stable_rs = ctx.stable_rs
    canary_pods = canary_rs.available if canary_rs else 0
    total = canary_pods + (stable_rs.available if stable_rs else 0)
    return round(100 * canary_pods / total) if total else 0


def _current_weight(ctx: Reconcile) -> int:
    """The weight the canary has now; none for a revision that is not the one weighted (a
    template changed mid-canary): Argo sends no traffic to a canary without available pods."""
    weights = ctx.status.canary.weights if ctx.status.canary else None
    if weights is None or weights.canary.pod_template_hash != ctx.new_hash:
        return 0
    return weights.canary.weight


def _hold_stable(ctx: Reconcile, canary: CanaryStrategy, steps: list[CanaryStep]) -> None:
    """No update in flight: the current template is the stable revision (first deploy or rollback to it)."""
    status = ctx.status
    rolled_back = status.stable_rs is not None and (
        bool(status.abort) or (status.current_step_index is not None and status.current_step_index < len(steps))
    )
    rs = ctx.ensure_new_rs(ctx.replicas)
    ctx.scale(rs, ctx.replicas)
    ctx.cancel_scale_down(rs)
    _services(ctx, canary, ctx.new_hash, ctx.new_hash, 0)
    if rolled_back:
        ctx.terminate_runs()
        ctx.finish("FastRolledBack")
        ctx.plan.event("RolloutCompleted", f"Rolled back to stable revision {rs.revision}")
    status.stable_rs = ctx.new_hash
    status.current_step_index = len(steps)
    status.abort = None
    status.aborted_at = None
    status.promote_full = None
    ctx.clear_pauses()
    if status.canary is not None:
        status.canary.current_step_analysis_run_status = None
        status.canary.current_background_analysis_run_status = None
    ctx.scale_down_old((ctx.new_hash,), canary.scale_down_delay_revision_limit)
    ctx.trim_history((ctx.new_hash,))


def _unwind_abort(ctx: Reconcile, canary: CanaryStrategy) -> None:
    """Aborted: all traffic back to stable at once (with dynamicStableScale, as fast as the stable
    can take it); the canary is scaled down after the abort delay."""
    status = ctx.status
    assert ctx.stable_hash is not None
    ctx.note_abort()
    routed = canary.traffic_routing is not None
    counts = canary_replica_counts(
        ctx.planning_rollout(), _counts(ctx.new_rs), _counts(ctx.stable_rs), [_counts_of(rs) for rs in _others(ctx)]
    )
    weight = 0 if routed else _observed_weight(ctx, ctx.new_hash)
    if routed and canary.dynamic_stable_scale and ctx.replicas > 0:
        # Argo: the stable was scaled down, so traffic returns only as fast as its pods are available.
        stable_available = ctx.stable_rs.available if ctx.stable_rs else 0
        weight = min(_current_weight(ctx), max(0, 100 - 100 * stable_available // ctx.replicas))
    _services(ctx, canary, ctx.stable_hash, ctx.new_hash, weight)
    ctx.scale(ctx.stable_rs, counts.stable)
    ctx.cancel_scale_down(ctx.stable_rs)
    ctx.terminate_runs()
    status.current_step_index = 0
    ctx.clear_pauses()
    ctx.finish("Aborted")
    if not routed:
        ctx.scale(ctx.new_rs, counts.canary)
        ctx.scale_down_old((ctx.new_hash, ctx.stable_hash))
        return
    delay = defaults.abort_scale_down_delay_seconds(canary)
    explicit = canary.abort_scale_down_delay_seconds is not None
    if delay > 0 and (explicit or not canary.dynamic_stable_scale):
        # Argo's shouldDelayScaleDownOnAbort: the canary keeps its size (with dynamicStableScale
        # too, when the delay is explicit) until the deadline, then goes to 0.
        _scale_down_after_abort_delay(ctx, delay)
    elif counts.canary > 0:
        # setCanaryScale kept (abortScaleDownDelaySeconds: 0), or dynamicStableScale without an
        # explicit delay: the canary drains as its traffic returns to the stable.
        ctx.scale(ctx.new_rs, counts.canary)
        return
    elif delay < 0 or canary.dynamic_stable_scale:
        ctx.scale(ctx.new_rs, 0)
    ctx.scale_down_old((ctx.new_hash, ctx.stable_hash))


def _scale_down_after_abort_delay(ctx: Reconcile, delay: int) -> None:
    """Argo's reconcileNewReplicaSet while aborted: the canary keeps its size until it is marked
    with a scale-down deadline `delay` seconds away, which happens once the stable has all its
    pods available (so traffic has somewhere to go); when the deadline passes it goes to 0."""
    rs = ctx.new_rs
    if rs is None or rs.replicas == 0:
        return
    if rs.scale_down_at is None:
        stable = ctx.stable_rs
        if stable is not None and stable.available == ctx.replicas:
            ctx.delay_scale_down(rs, delay)
        return  # a change of the stable's availability reconciles the rollout again
    if rs.scale_down_at > ctx.now:
        ctx.plan.requeue((rs.scale_down_at - ctx.now).total_seconds())
        return
    ctx.scale(rs, 0)
    ctx.plan.actions.append(SetScaleDownDeadline(rs.name, None))  # Argo drops it on a full scale-down


def _progress(ctx: Reconcile, canary: CanaryStrategy, steps: list[CanaryStep]) -> None:
    status = ctx.status
    assert ctx.stable_hash is not None and ctx.new_rs is not None
    index = status.current_step_index or 0
    if status.promote_full:
        index = len(steps)
        status.current_step_index = index
    halted = bool(ctx.rollout.spec.paused)

    # Replica counts and traffic follow the step we are on (Argo's exact arithmetic).
    planning = ctx.planning_rollout()
    new_c, stable_c = _counts(ctx.new_rs), _counts(ctx.stable_rs)
    others_c = [_counts_of(rs) for rs in _others(ctx)]
    counts = canary_replica_counts(planning, new_c, stable_c, others_c)
    at_counts = at_desired_replica_counts(planning, new_c, stable_c, others_c)
    ctx.scale(ctx.new_rs, counts.canary)
    ctx.scale(ctx.stable_rs, counts.stable)
    ctx.cancel_scale_down(ctx.stable_rs)
    ctx.cancel_scale_down(ctx.new_rs)
    ready = ctx.new_rs.available >= counts.canary and ctx.new_rs.replicas >= counts.canary
    weight = current_set_weight(planning)
    if canary.traffic_routing is not None:
        applied = _current_weight(ctx)
        # Never send more traffic to the canary than its available pods can take.
        target = weight if (weight <= applied or ready) else applied
    else:
        target = weight = _observed_weight(ctx, ctx.new_hash)
    # Routes of the steps up to this one (a route step's route is applied as it is reached).
    active = routes.canary_routes(canary, index) if canary.traffic_routing is not None else ()
    _services(ctx, canary, ctx.stable_hash, ctx.new_hash, target, active)
    ctx.scale_down_old((ctx.new_hash, ctx.stable_hash), canary.scale_down_delay_revision_limit)

    if _background_analysis(ctx, canary, index):
        if status.abort:
            _unwind_abort(ctx, canary)
        return
    if index >= len(steps):
        if ready and ctx.new_rs.available >= ctx.replicas and not halted:
            _promote(ctx, canary)
        return
    if halted:
        return
    step = steps[index]
    done = _step_done(ctx, step, index, at_counts and target == weight)
    if status.abort:
        # The failing verdict and the traffic shift back to stable happen in one reconcile.
        _unwind_abort(ctx, canary)
        return
    if done:
        status.current_step_index = index + 1
        if status.canary is not None:
            status.canary.current_step_analysis_run_status = None
        ctx.plan.event("RolloutStepCompleted", f"Rollout step {index + 1}/{len(steps)} completed ({_describe(step)})")
        ctx.plan.requeue(0)


def _others(ctx: Reconcile) -> list[ReplicaSetView]:
    return ctx.others(ctx.new_hash, ctx.stable_hash)


def _counts_of(rs: ReplicaSetView) -> ReplicaSetCounts:
    return ReplicaSetCounts(rs.name, rs.replicas, rs.available)


def _step_done(ctx: Reconcile, step: CanaryStep, index: int, at_weight: bool) -> bool:
    if step.set_weight is not None or step.set_canary_scale is not None:
        return at_weight
    if step.pause is not None:
        return _pause_done(ctx, step)
    if step.analysis is not None:
        return _step_analysis_done(ctx, step, index)
    # setHeaderRoute / setMirrorRoute complete at once, as in Argo: their route went out with
    # this reconcile's SetCanaryWeight (`_services`), and stays in effect through later steps.
    return True


def _pause_done(ctx: Reconcile, step: CanaryStep) -> bool:
    assert step.pause is not None
    if ctx.user_resumed():
        ctx.clear_pauses()
        return True
    condition = ctx.add_pause(PAUSE_CANARY_STEP)
    if step.pause.duration is None:
        return False
    try:
        seconds = parse_pause_duration(step.pause.duration)
    except DurationError:
        return False
    remaining = (ctx.pause_started(condition) + timedelta(seconds=seconds) - ctx.now).total_seconds()
    if remaining <= 0:
        ctx.clear_pauses()
        return True
    ctx.plan.requeue(remaining)
    return False


def _step_analysis_done(ctx: Reconcile, step: CanaryStep, index: int) -> bool:
    assert step.analysis is not None
    status = ctx.status
    status.canary = status.canary or CanaryStatus()
    slot = status.canary.current_step_analysis_run_status
    name, run = ctx.ensure_run(slot.name if slot else None, RUN_STEP, step.analysis, str(index), index)
    status.canary.current_step_analysis_run_status = ctx.run_status(name, run)
    return ctx.consume_run(run, "Step-based")


def _background_analysis(ctx: Reconcile, canary: CanaryStrategy, index: int) -> bool:
    """Start/track background analysis; True when it aborted or paused the rollout this reconcile."""
    analysis = canary.analysis
    if analysis is None or not analysis.templates or index < (analysis.starting_step or 0):
        return False
    if ctx.status.promote_full:
        return False  # Argo skips (and cancels) analysis on a full promotion
    status = ctx.status
    status.canary = status.canary or CanaryStatus()
    slot = status.canary.current_background_analysis_run_status
    name, run = ctx.ensure_run(slot.name if slot else None, RUN_BACKGROUND, analysis, None, None)
    status.canary.current_background_analysis_run_status = ctx.run_status(name, run)
    if run is None or run.phase in ("Pending", "Running", "Successful"):
        return False
    ctx.consume_run(run, "Background")
    return True


def _promote(ctx: Reconcile, canary: CanaryStrategy) -> None:
    status = ctx.status
    assert ctx.stable_rs is not None
    _services(ctx, canary, ctx.new_hash, ctx.new_hash, 0)
    ctx.delay_scale_down(ctx.stable_rs, defaults.scale_down_delay_seconds(canary))
    ctx.terminate_runs()
    completion = "FastPromoted" if status.promote_full else "Promoted"
    ctx.finish(completion)
    status.stable_rs = ctx.new_hash
    status.promote_full = None
    ctx.clear_pauses()
    if status.canary is not None:
        status.canary.current_background_analysis_run_status = None
        status.canary.current_step_analysis_run_status = None
    ctx.plan.event(
        "RolloutCompleted",
        f"Rollout completed update to revision {ctx.new_revision()}: "
        f"{ctx.new_rs.name if ctx.new_rs else ''} promoted to stable",
    )
    ctx.plan.requeue(0)


def _describe(step: CanaryStep) -> str:
    if step.set_weight is not None:
        return f"setWeight: {step.set_weight}"
    if step.pause is not None:
        return f"pause: {step.pause.duration}" if step.pause.duration is not None else "pause"
    if step.analysis is not None:
        names = ", ".join(t.template_name for t in step.analysis.templates or [])
        return f"analysis: {names}"
    if step.set_header_route is not None:
        return f"setHeaderRoute: {step.set_header_route.name}"
    if step.set_mirror_route is not None:
        return f"setMirrorRoute: {step.set_mirror_route.name}"
    return ", ".join(step.kinds())
