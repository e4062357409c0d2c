"""The progress deadline: an update that makes no progress for progressDeadlineSeconds is Degraded.

Argo keeps the time of the last progress in the Progressing condition's lastUpdateTime and
compares it with the deadline on every reconcile. Time does not count while the rollout is
paused, sits at a pause or analysis step (or waits for pre/post-promotion analysis), or
waits for old ReplicaSets to be scaled down; with progressDeadlineAbort the update is
aborted as well.
"""

from __future__ import annotations

from rollouts.core import defaults
from rollouts.core.context import Reconcile
from rollouts.core.timeutil import parse_rfc3339
from rollouts.model.rollout import RolloutStatus

REASON = "ProgressDeadlineExceeded"


def fingerprint(status: RolloutStatus | None) -> tuple[object, ...]:
    """What changes when an update makes progress (not an abort or its retry: Argo marks those
    with the Progressing reasons RolloutAborted and RolloutRetry)."""
    if status is None:
        return ()
    return (
        status.current_pod_hash,
        status.current_step_index,
        status.stable_rs,
        status.updated_replicas,
        status.ready_replicas,
        status.available_replicas,
    )


def waiting_is_expected(ctx: Reconcile) -> bool:
    """Paused, at a pause or analysis step, waiting on analysis, or on a scale-down delay."""
    status = ctx.status
    if ctx.rollout.spec.paused or status.pause_conditions:
        return True
    canary = ctx.rollout.spec.strategy.canary
    if canary is not None and status.current_step_index is not None:
        steps = canary.steps or []
        if status.current_step_index < len(steps):
            step = steps[status.current_step_index]
            if step.pause is not None or step.analysis is not None or step.experiment is not None:
                return True
    blue_green = status.blue_green
    if blue_green is not None:
        for run in (blue_green.pre_promotion_analysis_run_status, blue_green.post_promotion_analysis_run_status):
            if run is not None and run.status in ("Pending", "Running"):
                return True
    keep = (ctx.new_hash, ctx.stable_hash)
    return any(rs.scale_down_at is not None and rs.scale_down_at > ctx.now for rs in ctx.others(*keep))


def seconds_left(ctx: Reconcile, last_progress_time: str | None) -> float | None:
    """Seconds until the deadline passes (negative when it has), or None when it does not apply."""
    last = parse_rfc3339(last_progress_time)
    if last is None or waiting_is_expected(ctx):
        return None
    deadline = defaults.progress_deadline_seconds(ctx.rollout)
    return deadline - (ctx.now - last).total_seconds()
