"""`spec.restartAt`: a rolling recreate of the rollout's pods, outside the update strategy.

As Argo's `RolloutPodRestarter`: once `restartAt` has passed, every pod created before it is
deleted (evicted) and its ReplicaSet replaces it, at most max(maxUnavailable, 1) pods being
unavailable at a time, in the order stable ReplicaSet, new ReplicaSet, then the others from
the oldest. When no pod is older than `restartAt`, `status.restartedAt` records it. A
template change cancels a pending restart (`status.restartedAt` is set to `spec.restartAt`):
the update brings up new pods anyway.
"""

from __future__ import annotations

from datetime import datetime

from rollouts.core import defaults
from rollouts.core.context import Reconcile
from rollouts.core.plan import ReplicaSetView, RestartPod, ScaleReplicaSet
from rollouts.core.replicas import resolve_fenceposts
from rollouts.core.timeutil import parse_rfc3339
from rollouts.model.rollout import Rollout

# How soon to look again while pods are being replaced (their ReplicaSets' changes wake us too).
RECHECK_SECONDS = 1.0


def restart_pending(rollout: Rollout) -> bool:
    """Whether the rollout asks for a restart not yet recorded as done: only then do platforms
    list pods for `ReplicaSetView.pods` (no other planning step reads them)."""
    requested = rollout.spec.restart_at
    if not requested:
        return False
    done = rollout.status.restarted_at if rollout.status else None
    return done != requested


def restart_at(ctx: Reconcile) -> datetime | None:
    return parse_rfc3339(ctx.rollout.spec.restart_at)


def pending(ctx: Reconcile) -> bool:
    """A restart is due (restartAt has passed) and not yet done."""
    at = restart_at(ctx)
    return at is not None and at <= ctx.now and not _done(ctx, at)


def _done(ctx: Reconcile, at: datetime) -> bool:
    restarted = parse_rfc3339(ctx.status.restarted_at)
    return restarted is not None and restarted >= at


def max_unavailable(ctx: Reconcile) -> int:
    """How many pods may be down at once: max(maxUnavailable, 1) of the strategy in use."""
    strategy = ctx.rollout.spec.strategy
    value = strategy.canary.max_unavailable if strategy.canary is not None else None
    if strategy.blue_green is not None:
        value = strategy.blue_green.max_unavailable
    if value is None:
        value = defaults.MAX_UNAVAILABLE
    try:
        _, unavailable = resolve_fenceposts(1, value, ctx.replicas)
    except ValueError:
        unavailable = 0
    return max(unavailable, 1)


def _ordered(ctx: Reconcile) -> list[ReplicaSetView]:
    """Stable ReplicaSet, new ReplicaSet, then the others from the oldest revision."""
    first: list[ReplicaSetView] = []
    for rs in (ctx.snap.rs_by_hash(ctx.stable_hash), ctx.snap.rs_by_hash(ctx.new_hash)):
        if rs is not None and rs not in first:
            first.append(rs)
    rest = sorted((rs for rs in ctx.snap.replica_sets if rs not in first), key=lambda rs: rs.revision)
    return first + rest


def plan_restart(ctx: Reconcile) -> None:
    at = restart_at(ctx)
    if at is None or _done(ctx, at):
        return
    status = ctx.status
    if at > ctx.now:
        ctx.plan.requeue((at - ctx.now).total_seconds())
        return
    before = ctx.snap.rollout.status.current_pod_hash if ctx.snap.rollout.status else None
    if before is not None and before != ctx.new_hash:
        status.restarted_at = ctx.rollout.spec.restart_at
        ctx.plan.event("RestartCancelled", "Pod restart cancelled: the pod template changed")
        return
    planned = {a.name: a.replicas for a in ctx.plan.actions if isinstance(a, ScaleReplicaSet)}
    sets = [rs for rs in _ordered(ctx) if planned.get(rs.name, rs.replicas) > 0]
    unavailable = sum(max(0, rs.replicas - rs.available) for rs in sets)
    unavailable += sum(1 for rs in sets for pod in rs.pods if pod.terminating)
    budget = max_unavailable(ctx) - unavailable
    old = 0
    for rs in sets:
        for pod in sorted(rs.pods, key=lambda pod: (pod.created, pod.name)):
            if pod.terminating or pod.created >= at:
                continue
            old += 1
            if budget > 0:
                budget -= 1
                ctx.plan.actions.append(RestartPod(pod.name))
                ctx.plan.event("RestartingPod", f"Restarting pod {pod.name} of ReplicaSet {rs.name}")
    if old == 0:
        status.restarted_at = ctx.rollout.spec.restart_at
        ctx.plan.event("RestartCompleted", "All pods have been restarted")
        return
    ctx.plan.requeue(RECHECK_SECONDS)
