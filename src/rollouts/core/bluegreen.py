"""Blue/green planning: preview, pre-promotion analysis, pause, cutover, post-promotion analysis.

In the manner of Argo's `rolloutBlueGreen`: the new ReplicaSet comes up behind the preview
Service (at previewReplicaCount if set), pre-promotion analysis must pass, the rollout pauses
unless auto-promotion applies, then the new ReplicaSet is scaled to full size and the active
Service switches to it in one step. Post-promotion analysis decides whether it becomes
stable; a failure switches the active Service back.
"""

from __future__ import annotations

from datetime import timedelta

from rollouts.core import defaults
from rollouts.core.context import PAUSE_BLUE_GREEN, Reconcile
from rollouts.core.plan import RUN_POST, RUN_PRE, PointService
from rollouts.model.rollout import BlueGreenStatus, BlueGreenStrategy


def plan_blue_green(ctx: Reconcile) -> None:
    bg = ctx.rollout.spec.strategy.blue_green
    assert bg is not None
    status = ctx.status
    status.blue_green = status.blue_green or BlueGreenStatus()
    if status.current_pod_hash != ctx.new_hash:
        if ctx.stable_hash is not None and ctx.new_hash != ctx.stable_hash:
            ctx.start_update()
            status.blue_green.scale_up_preview_check_point = None
            status.blue_green.pre_promotion_analysis_run_status = None
            status.blue_green.post_promotion_analysis_run_status = None
        else:
            status.current_pod_hash = ctx.new_hash
    if ctx.stable_hash is None or ctx.new_hash == ctx.stable_hash:
        _hold_stable(ctx, bg)
        return
    ctx.ensure_new_rs(0)
    if status.abort:
        _unwind_abort(ctx, bg)
        return
    ctx.reopen_after_retry()
    _progress(ctx, bg)
    if status.abort:
        _unwind_abort(ctx, bg)


def _point(ctx: Reconcile, service: str | None, pod_hash: str) -> None:
    if service:
        ctx.plan.actions.append(PointService(service, pod_hash))


def _hold_stable(ctx: Reconcile, bg: BlueGreenStrategy) -> None:
    status = ctx.status
    assert status.blue_green is not None
    rolled_back = status.stable_rs is not None and bool(
        status.abort or (status.blue_green.active_selector and status.blue_green.active_selector != ctx.new_hash)
    )
    rs = ctx.ensure_new_rs(ctx.replicas)
    ctx.scale(rs, ctx.replicas)
    ctx.cancel_scale_down(rs)
    _point(ctx, bg.active_service, ctx.new_hash)
    _point(ctx, bg.preview_service, ctx.new_hash)
    status.blue_green.active_selector = ctx.new_hash
    status.blue_green.preview_selector = ctx.new_hash
    if rolled_back:
        ctx.terminate_runs()
        ctx.finish("FastRolledBack")
    if rs.available >= ctx.replicas or status.stable_rs is not None:
        status.stable_rs = ctx.new_hash
    status.abort = None
    status.aborted_at = None
    ctx.clear_pauses()
    ctx.scale_down_old((ctx.new_hash,), bg.scale_down_delay_revision_limit)
    ctx.trim_history((ctx.new_hash,))


def _unwind_abort(ctx: Reconcile, bg: BlueGreenStrategy) -> None:
    """Aborted: the active Service stays on (or returns to) stable; preview scaled down after the delay."""
    status = ctx.status
    assert status.blue_green is not None and ctx.stable_hash is not None
    ctx.note_abort()
    _point(ctx, bg.active_service, ctx.stable_hash)
    _point(ctx, bg.preview_service, ctx.stable_hash)
    status.blue_green.active_selector = ctx.stable_hash
    status.blue_green.preview_selector = ctx.stable_hash
    ctx.scale(ctx.stable_rs, ctx.replicas)
    ctx.cancel_scale_down(ctx.stable_rs)
    ctx.terminate_runs()
    ctx.clear_pauses()
    ctx.finish("Aborted")
    delay = defaults.abort_scale_down_delay_seconds(bg)
    if delay > 0 and ctx.new_rs is not None and ctx.new_rs.replicas > 0:
        due = ctx.aborted_since() + timedelta(seconds=delay)
        if due <= ctx.now:
            ctx.scale(ctx.new_rs, 0)
        else:
            ctx.plan.requeue((due - ctx.now).total_seconds())
    ctx.scale_down_old((ctx.new_hash, ctx.stable_hash))


def _progress(ctx: Reconcile, bg: BlueGreenStrategy) -> None:
    status = ctx.status
    assert status.blue_green is not None and ctx.new_rs is not None and ctx.stable_hash is not None
    bgs = status.blue_green
    promoting = bool(bgs.scale_up_preview_check_point) or bool(status.promote_full)
    preview_size = bg.preview_replica_count if bg.preview_replica_count is not None else ctx.replicas
    target = ctx.replicas if promoting else preview_size
    ctx.scale(ctx.new_rs, target)
    ctx.scale(ctx.stable_rs, ctx.replicas)
    ctx.cancel_scale_down(ctx.stable_rs)
    _point(ctx, bg.preview_service, ctx.new_hash)
    bgs.preview_selector = ctx.new_hash
    if bgs.active_selector != ctx.new_hash:
        _point(ctx, bg.active_service, ctx.stable_hash)
        bgs.active_selector = ctx.stable_hash
    ctx.scale_down_old((ctx.new_hash, ctx.stable_hash))
    available = ctx.new_rs.available >= target and ctx.new_rs.replicas >= target
    if not available:
        return

    if bgs.active_selector != ctx.new_hash:
        if not promoting:
            if not status.promote_full and not _analysis_passed(ctx, bg, pre=True):
                return
            if not _pause_passed(ctx, bg):
                return
            bgs.scale_up_preview_check_point = True if bg.preview_replica_count is not None else None
            if bg.preview_replica_count is not None and preview_size < ctx.replicas:
                ctx.scale(ctx.new_rs, ctx.replicas)
                ctx.plan.requeue(0)
                return
        if ctx.rollout.spec.paused:
            return
        _point(ctx, bg.active_service, ctx.new_hash)
        bgs.active_selector = ctx.new_hash
        ctx.plan.event("SwitchService", f"Switched selector for service '{bg.active_service}' to '{ctx.new_hash}'")

    if not status.promote_full and not _analysis_passed(ctx, bg, pre=False):
        return
    _promote(ctx, bg)


def _analysis_passed(ctx: Reconcile, bg: BlueGreenStrategy, *, pre: bool) -> bool:
    analysis = bg.pre_promotion_analysis if pre else bg.post_promotion_analysis
    if analysis is None or not analysis.templates:
        return True
    bgs = ctx.status.blue_green
    assert bgs is not None
    slot = bgs.pre_promotion_analysis_run_status if pre else bgs.post_promotion_analysis_run_status
    name, run = ctx.ensure_run(
        slot.name if slot else None, RUN_PRE if pre else RUN_POST, analysis, "pre" if pre else "post", None
    )
    if pre:
        bgs.pre_promotion_analysis_run_status = ctx.run_status(name, run)
    else:
        bgs.post_promotion_analysis_run_status = ctx.run_status(name, run)
    return ctx.consume_run(run, "PrePromotion" if pre else "PostPromotion")


def _pause_passed(ctx: Reconcile, bg: BlueGreenStrategy) -> bool:
    if ctx.status.promote_full:
        return True
    auto = defaults.auto_promotion_enabled(bg)
    seconds = bg.auto_promotion_seconds or 0
    if auto and seconds <= 0:
        return True
    if ctx.user_resumed():
        ctx.clear_pauses()
        return True
    if ctx.rollout.spec.paused:
        return False
    condition = ctx.add_pause(PAUSE_BLUE_GREEN)
    if auto:
        remaining = (ctx.pause_started(condition) + timedelta(seconds=seconds) - ctx.now).total_seconds()
        if remaining <= 0:
            ctx.clear_pauses()
            return True
        ctx.plan.requeue(remaining)
    return False


def _promote(ctx: Reconcile, bg: BlueGreenStrategy) -> None:
    status = ctx.status
    assert status.blue_green is not None
    completion = "FastPromoted" if status.promote_full else "Promoted"
    ctx.finish(completion)
    ctx.delay_scale_down(ctx.stable_rs, defaults.scale_down_delay_seconds(bg))
    status.stable_rs = ctx.new_hash
    status.promote_full = None
    status.blue_green.scale_up_preview_check_point = None
    ctx.clear_pauses()
    ctx.terminate_runs()
    ctx.plan.event("RolloutCompleted", f"Rollout completed update to revision {ctx.new_revision()}")
    ctx.plan.requeue(0)
