"""Canary replica arithmetic: how many pods the stable and canary ReplicaSets get this reconcile.

Pure functions over a Rollout and the observed counts of its ReplicaSets, mirroring Argo
Rollouts' `utils/replicaset` (`CalculateReplicaCountsForBasicCanary`,
`CalculateReplicaCountsForTrafficRoutedCanary`, `AtDesiredReplicaCountsForCanary`,
`resolveFenceposts`) so that a Rollout scales here exactly as it would under Argo. The
planner (`core.canary`) asks `canary_replica_counts` for the targets and scales the
ReplicaSets; nothing here does I/O or reads a clock.

Two regimes, chosen by `spec.strategy.canary.trafficRouting`:

* basic canary (no router): traffic follows pods, so the canary weight is approximated by
  the ratio of canary to stable pods, and every move honours maxSurge/maxUnavailable;
* traffic-routed canary: the router splits traffic, so the canary is sized from the weight
  (or setCanaryScale) and the stable stays fully scaled unless `dynamicStableScale`.

Where Argo's own arithmetic is in floating point (tie detection in the basic approximation),
the same IEEE-754 operations are used, so edge cases round the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rollouts.core import defaults
from rollouts.model.rollout import CanaryStrategy, Rollout, SetCanaryScale

__all__ = [
    "CanaryReplicaCounts",
    "ReplicaSetCounts",
    "at_desired_replica_counts",
    "canary_replica_counts",
    "current_canary_scale",
    "current_set_weight",
    "resolve_fenceposts",
]


@dataclass(frozen=True)
class ReplicaSetCounts:
    """What the arithmetic needs of one ReplicaSet.

    `replicas` is `spec.replicas` (desired), `available` is `status.availableReplicas`, and
    `current` is `status.replicas` (pods that exist; kubectl's CURRENT). `current` is only
    read by `at_desired_replica_counts` for the stable ReplicaSet; None means "same as
    `replicas`". ReplicaSets are told apart by `name`, as in Argo.
    """

    name: str
    replicas: int
    available: int
    current: int | None = None


@dataclass(frozen=True)
class CanaryReplicaCounts:
    """Desired `spec.replicas` of the stable and canary ReplicaSets for this reconcile."""

    stable: int
    canary: int


# --- maxSurge / maxUnavailable -------------------------------------------------------------

_INT_OR_PERCENT = re.compile(r"(\d+)(%?)")


def _scaled(value: int | str | None, total: int, round_up: bool, field: str) -> int:
    """An IntOrString against `total`: ints as is, "N%" (or a bare "N", as Argo reads it) as a share."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{field} must be an integer or a percentage like '25%', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{field} must not be negative, got {value}")
        return value
    match = _INT_OR_PERCENT.fullmatch(value)
    if match is None:
        raise ValueError(f"{field} must be an integer or a percentage like '25%', got {value!r}")
    percent = int(match.group(1))
    return -(-percent * total // 100) if round_up else percent * total // 100


def resolve_fenceposts(max_surge: int | str | None, max_unavailable: int | str | None, desired: int) -> tuple[int, int]:
    """Resolve maxSurge and maxUnavailable against `desired` replicas, together (Argo's resolveFenceposts).

    surge = maxSurge as int, or ceil(p% * desired); unavailable = maxUnavailable as int, or
    floor(p% * desired). An unset value counts as 0. If both resolve to 0 (validation forbids
    setting both to 0, but rounding down can produce it), unavailable becomes 1 so the rollout
    can still move (surge may be blocked by quota).

    Like Kubernetes' IntOrString reading in Argo, a string without "%" is also a percentage:
    Argo's own default is the string "25", meaning 25%.

    Examples (desired 10): ("25%", "25%") -> (3, 2); (1, 0) -> (1, 0); ("0%", "0%") -> (0, 1);
    desired 1: ("25%", "25%") -> (1, 0); desired 3: ("20%", "50%") -> (1, 1).

    Raises ValueError for negatives, non-numeric strings and other types.
    """
    surge = _scaled(max_surge, desired, True, "maxSurge")
    unavailable = _scaled(max_unavailable, desired, False, "maxUnavailable")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _canary(rollout: Rollout) -> CanaryStrategy | None:
    return rollout.spec.strategy.canary


def _strategy(rollout: Rollout) -> CanaryStrategy:
    strategy = rollout.spec.strategy.canary
    if strategy is None:
        raise ValueError(f"rollout {rollout.metadata.name!r} has no canary strategy")
    return strategy


def _fenceposts(rollout: Rollout, strategy: CanaryStrategy) -> tuple[int, int]:
    """Argo's MaxSurge and MaxUnavailable: defaults "25%"; unavailable is 0 for 0 replicas and capped at replicas."""
    replicas = defaults.replicas(rollout)
    surge, unavailable = resolve_fenceposts(
        defaults.MAX_SURGE if strategy.max_surge is None else strategy.max_surge,
        defaults.MAX_UNAVAILABLE if strategy.max_unavailable is None else strategy.max_unavailable,
        replicas,
    )
    return surge, min(unavailable, replicas)


# --- where the rollout is: weight and setCanaryScale ---------------------------------------


def _at_full_weight(rollout: Rollout) -> bool:
    """No update in flight (no stable yet, or the template is the stable) or promote --full: weight 100."""
    status = rollout.status
    if status is None:
        return True
    stable = status.stable_rs or ""
    return bool(status.promote_full) or stable == "" or (status.current_pod_hash or "") == stable


def _step_index(rollout: Rollout) -> int | None:
    """Argo's GetCurrentCanaryStep index: None without steps; an unset index is 0."""
    canary = _canary(rollout)
    if canary is None or not canary.steps:
        return None
    index = rollout.status.current_step_index if rollout.status is not None else None
    index = 0 if index is None else index
    if index < 0:
        raise ValueError(f"status.currentStepIndex must not be negative, got {index}")
    return index


def _step_weight(rollout: Rollout) -> int:
    """Argo's GetCurrentSetWeight: 0 when aborted, the last setWeight at or before the step, 100 past the end."""
    if rollout.status is not None and rollout.status.abort:
        return 0
    index = _step_index(rollout)
    canary = _canary(rollout)
    if index is None or canary is None or canary.steps is None or index >= len(canary.steps):
        return 100
    for step in reversed(canary.steps[: index + 1]):
        if step.set_weight is not None:
            return step.set_weight
    return 0


def current_set_weight(rollout: Rollout) -> int:
    """The canary traffic weight the rollout is at, ignoring setCanaryScale.

    100 when `status.promoteFull`, when there is no `status.stableRS`, or when
    `status.currentPodHash == status.stableRS` (nothing to canary); otherwise 0 when
    `status.abort`; otherwise the last `setWeight` at or before `status.currentStepIndex`
    (unset index = 0), 0 if none, and 100 once the index is past the last step or there
    are no steps.

    Example: steps [setWeight 20, pause, setWeight 50], index 1 -> 20; index 3 -> 100.
    """
    return 100 if _at_full_weight(rollout) else _step_weight(rollout)


def current_canary_scale(rollout: Rollout) -> SetCanaryScale | None:
    """The setCanaryScale in force (Argo's UseSetCanaryScale), or None.

    Only with trafficRouting. The last setCanaryScale at or before the current step applies
    (it is sticky across later steps) unless that one sets `matchTrafficWeight: true`. While
    aborted it is ignored, unless `abortScaleDownDelaySeconds: 0` asked to leave the canary
    scaled up. None past the last step.
    """
    canary = _canary(rollout)
    if canary is None or canary.traffic_routing is None:
        return None
    if rollout.status is not None and rollout.status.abort and canary.abort_scale_down_delay_seconds != 0:
        return None
    index = _step_index(rollout)
    if index is None or canary.steps is None or index >= len(canary.steps):
        return None
    for step in reversed(canary.steps[: index + 1]):
        if step.set_canary_scale is not None:
            return None if step.set_canary_scale.match_traffic_weight else step.set_canary_scale
    return None


def _replicas_or_weight(rollout: Rollout) -> tuple[int | None, int]:
    """Argo's GetCanaryReplicasOrWeight: an explicit canary count (setCanaryScale.replicas) or a weight."""
    if _at_full_weight(rollout):
        return None, 100
    scale = current_canary_scale(rollout)
    if scale is not None:
        if scale.replicas is not None:
            return scale.replicas, 0
        if scale.weight is not None:
            return None, scale.weight
    return None, _step_weight(rollout)


# --- basic canary --------------------------------------------------------------------------


def _approximate(replicas: int, weight: int, max_surge: int) -> tuple[int, int]:
    """(canary, stable) whose ratio best approximates `weight` (Argo's approximateWeightedCanaryStableReplicaCounts).

    Candidates total either `replicas` or, if maxSurge > 0, `replicas + 1`; the canary is
    ceil or floor of replicas * weight / 100. The candidate whose canary share is closest to
    the weight wins; on a tie the earlier candidate (the larger canary) wins. For
    0 < weight < 100 neither side may be 0, unless replicas == 1 and maxSurge == 0.

    Examples: (10, 15, 0) -> (2, 8); (10, 1, 1) -> (1, 10) i.e. 9.1%; (3, 50, 0) -> (2, 1);
    (1, 50, 1) -> (1, 1); (1, 49, 0) -> (0, 1).
    """
    if replicas == 0:
        return 0, 0
    ceil_count = -(-replicas * weight // 100)
    floor_count = replicas * weight // 100
    zero_allowed = weight in (0, 100) or (replicas == 1 and max_surge == 0)
    options: list[tuple[int, int]] = []
    if ceil_count < replicas or zero_allowed:
        options.append((ceil_count, replicas))
    if not _tied(weight, replicas) and (floor_count != 0 or zero_allowed):
        options.append((floor_count, replicas))
    if max_surge > 0:
        options.append((ceil_count, replicas + 1))
        if not _tied(weight, replicas + 1) and (floor_count != 0 or zero_allowed):
            options.append((floor_count, replicas + 1))
    if not options:
        return 0, replicas  # Argo: "should not get here" (e.g. replicas 2, weight 75, maxSurge 0)
    best = options[0]
    for option in options[1:]:
        if _delta(weight, *option) < _delta(weight, *best):
            best = option
    return best[0], best[1] - best[0]


def _tied(weight: int, total: int) -> bool:
    """Floor and ceil equally far from the weight: total * weight / 100 ends in .5 (in float64, as Argo)."""
    return math.modf(float(total) * (float(weight) / 100))[0] == 0.5


def _delta(weight: int, canary: int, total: int) -> float:
    return abs(float(canary * 100) / float(total) - float(weight))


def _for_scale_down(rs: ReplicaSetCounts | None, ignore_availability: bool) -> int:
    """Argo's GetReplicasForScaleDown: pods of `rs` that count as available when planning a scale-down."""
    if rs is None:
        return 0
    if rs.replicas < rs.available or ignore_availability:
        return rs.replicas
    return rs.available


def _drain(rs: ReplicaSetCounts | None, desired: int, scale_down: int, count: int) -> int:
    """Argo's calculateScaleDownReplicaCount: move `rs` down by up to `scale_down`, not below `desired`."""
    if rs is not None and rs.replicas > desired:
        return max(desired, rs.replicas - scale_down)
    return count


def _within_limits(
    drain_rs: ReplicaSetCounts | None,
    adjust_rs: ReplicaSetCounts | None,
    drain: int,
    adjust: int,
    max_total: int,
    min_available: int,
) -> tuple[int, int]:
    """Argo's adjustReplicaWithinLimits: trim the pair back under maxSurge without breaking maxUnavailable.

    The adjusted side gives up whatever exceeds `max_total`, takes back pods it needs to keep
    `min_available` available, and the drained side then gives up any remaining excess.
    """
    available = min(drain_rs.available, drain) if drain_rs is not None else 0
    if adjust_rs is not None:
        adjust -= max(0, adjust + drain - max_total)
        available += min(adjust_rs.available, adjust)
        lost = max(0, adjust_rs.available - adjust)
        adjust += min(lost, max(0, min_available - available))
        drain -= max(0, adjust + drain - max_total)
    return drain, adjust


def _basic(
    rollout: Rollout,
    strategy: CanaryStrategy,
    canary: ReplicaSetCounts | None,
    stable: ReplicaSetCounts | None,
    others: Sequence[ReplicaSetCounts],
) -> CanaryReplicaCounts:
    """Argo's CalculateReplicaCountsForBasicCanary.

    1. Targets from `_approximate(replicas, weight, maxSurge)`; without a distinct stable
       ReplicaSet the canary targets all replicas.
    2. Scale up within the surge budget: room = replicas + maxSurge - sum(spec.replicas of
       all ReplicaSets); the stable is topped up first, then the canary.
    3. If other ReplicaSets still have replicas, stop: they are scaled down first.
    4. Scale down within the availability budget: excess = available pods that count -
       (replicas - maxUnavailable). Pods of the side that is growing count at spec size
       (so unavailable pods do not block), the shrinking side at its available pods. The
       shrinking side (stable while the canary grows, the canary when the weight falls, e.g.
       on abort) gives up to `excess` pods, then `_within_limits` rebalances the pair.

    Examples (replicas 10, setWeight 20, canary 0/0, stable 10/10):
    maxSurge 2, maxUnavailable 0 -> canary 2, stable 10 (surge first);
    then canary 2/2 -> stable 8 (scale down);
    maxSurge 0, maxUnavailable 2 -> canary 0, stable 8 (make room first).
    """
    replicas = defaults.replicas(rollout)
    _, weight = _replicas_or_weight(rollout)
    max_surge, max_unavailable = _fenceposts(rollout, strategy)
    desired_canary, desired_stable = _approximate(replicas, weight, max_surge)

    canary_count = canary.replicas if canary is not None else 0
    scale_stable = stable is not None and (canary is None or canary.name != stable.name)
    stable_count = stable.replicas if stable is not None and scale_stable else 0
    if not scale_stable:
        desired_canary, desired_stable = replicas, 0

    max_total = replicas + max_surge
    others_total = sum(rs.replicas for rs in others)
    total = others_total + canary_count + stable_count
    room = max_total - total
    if stable is not None and scale_stable and stable.replicas < desired_stable and room > 0:
        stable_count = min(stable.replicas + room, desired_stable)
        room -= stable_count - stable.replicas
    if canary is not None and canary.replicas < desired_canary and room > 0:
        canary_count = min(canary.replicas + room, desired_canary)

    if others_total > 0:
        return CanaryReplicaCounts(stable=stable_count, canary=canary_count)

    min_available = replicas - max_unavailable
    increasing = canary is None or desired_canary >= canary.replicas
    counted = _for_scale_down(canary, not increasing) + _for_scale_down(stable, increasing)
    if counted <= min_available:
        return CanaryReplicaCounts(stable=stable_count, canary=canary_count)
    excess = counted - min_available
    if not increasing:
        canary_count = _drain(canary, desired_canary, excess, canary_count)
        canary_count, stable_count = _within_limits(
            canary, stable, canary_count, stable_count, max_total, min_available
        )
    elif scale_stable:
        stable_count = _drain(stable, desired_stable, excess, stable_count)
        stable_count, canary_count = _within_limits(
            stable, canary, stable_count, canary_count, max_total, min_available
        )
    return CanaryReplicaCounts(stable=stable_count, canary=canary_count)


# --- traffic-routed canary -----------------------------------------------------------------


def _weight_to_replicas(replicas: int, weight: int) -> int:
    """ceil(replicas * weight / 100) (Argo's trafficWeightToReplicas)."""
    return -(-weight * replicas // 100)


def _min_pods(rollout: Rollout, strategy: CanaryStrategy, count: int) -> int:
    """Raise a non-zero count to minPodsPerReplicaSet (trafficRouting only), the minimum capped at spec.replicas."""
    minimum = strategy.min_pods_per_replica_set
    if count == 0 or minimum is None or strategy.traffic_routing is None:
        return count
    return max(count, min(minimum, defaults.replicas(rollout)))


def _traffic_routed(rollout: Rollout, strategy: CanaryStrategy) -> CanaryReplicaCounts:
    """Argo's CalculateReplicaCountsForTrafficRoutedCanary.

    canary = setCanaryScale.replicas if set, else ceil(replicas * weight / 100) raised to
    minPodsPerReplicaSet (weight = setCanaryScale.weight if set, else the setWeight).
    stable = replicas, unless dynamicStableScale: then stable = ceil(replicas * (100 -
    weight) / 100), but never below what the stable's *current* traffic share needs (so it
    shrinks only after traffic has left it), and when aborted the canary likewise stays at
    least as large as its current traffic share (it drains as traffic returns to stable).
    Both are then raised to minPodsPerReplicaSet.

    Examples (replicas 10, setWeight 20): canary 2, stable 10. With dynamicStableScale and
    current weights canary 10 / stable 90: canary 2, stable 9; aborted, with current weights
    canary 20 / stable 80: canary 2 (weight 0, but traffic still there), stable 10.
    """
    replicas = defaults.replicas(rollout)
    explicit, weight = _replicas_or_weight(rollout)
    canary = explicit if explicit is not None else _min_pods(rollout, strategy, _weight_to_replicas(replicas, weight))
    if not strategy.dynamic_stable_scale:
        # The stable stays fully scaled; the router keeps the canary's share of traffic off it.
        return CanaryReplicaCounts(stable=replicas, canary=canary)
    stable = _weight_to_replicas(replicas, 100 - weight)
    weights = rollout.status.canary.weights if rollout.status is not None and rollout.status.canary else None
    if weights is not None:
        stable = max(stable, _weight_to_replicas(replicas, weights.stable.weight))
        if rollout.status is not None and rollout.status.abort:
            canary = max(canary, _weight_to_replicas(replicas, weights.canary.weight))
    return CanaryReplicaCounts(stable=_min_pods(rollout, strategy, stable), canary=_min_pods(rollout, strategy, canary))


# --- public entry points -------------------------------------------------------------------


def canary_replica_counts(
    rollout: Rollout,
    canary: ReplicaSetCounts | None,
    stable: ReplicaSetCounts | None,
    others: Sequence[ReplicaSetCounts] = (),
) -> CanaryReplicaCounts:
    """The desired stable and canary replicas for this reconcile, exactly as Argo Rollouts computes them.

    Reads the rollout's spec (replicas, default 1; steps; maxSurge and maxUnavailable,
    default "25%" each; trafficRouting; dynamicStableScale; minPodsPerReplicaSet;
    abortScaleDownDelaySeconds) and status (currentStepIndex, currentPodHash, stableRS,
    abort, promoteFull, canary.weights), plus the canary (new), stable and other
    ReplicaSets' spec and available replicas.

    The weight is 100 on `promoteFull` or when no update is in flight, 0 when aborted,
    else the current setWeight; setCanaryScale overrides it for the canary with
    trafficRouting (see `current_canary_scale`).

    * Without trafficRouting (basic canary) the weight is approximated by pod counts and
      every step honours maxSurge and maxUnavailable, counting other ReplicaSets' pods and
      scaling those down first (see `_basic`). Example: replicas 10, setWeight 10,
      maxSurge 1, maxUnavailable 1, stable 10/10 -> canary 1, stable 9.
    * With trafficRouting the canary is ceil(replicas * weight / 100) (or setCanaryScale)
      and the stable stays at replicas, unless dynamicStableScale (see `_traffic_routed`).
      `status.canary.weights` is taken as the traffic split currently applied. Example:
      replicas 10, setWeight 5, minPodsPerReplicaSet 2 -> canary 2, stable 10.

    On abort with trafficRouting the result is the target after `abortScaleDownDelaySeconds`
    (canary 0 unless setCanaryScale is kept); holding the canary up during the delay is the
    caller's job, as in Argo's controller. When the canary and stable are the same
    ReplicaSet (or there is no stable), only `canary` is meaningful.

    Raises ValueError if the rollout has no canary strategy or maxSurge/maxUnavailable are
    malformed.
    """
    strategy = _strategy(rollout)
    if strategy.traffic_routing is None:
        return _basic(rollout, strategy, canary, stable, others)
    return _traffic_routed(rollout, strategy)


def _threshold_met(strategy: CanaryStrategy, available: int, desired: int) -> bool:
    """Canary availability: exactly the desired pods, or enough for replicaProgressThreshold (Percent or Pods)."""
    threshold = strategy.replica_progress_threshold
    if threshold is None:
        return available == desired
    if threshold.type == "Percent":
        return available * 100 >= threshold.value * desired
    if threshold.type in ("Pods", "Pod"):
        return available >= threshold.value
    return False


def at_desired_replica_counts(
    rollout: Rollout,
    canary: ReplicaSetCounts | None,
    stable: ReplicaSetCounts | None,
    others: Sequence[ReplicaSetCounts] = (),
) -> bool:
    """Whether a setWeight/setCanaryScale step has reached its replica counts (Argo's AtDesiredReplicaCountsForCanary).

    * the canary exists, its spec.replicas equals the desired count, and its available pods
      equal it too (or meet `replicaProgressThreshold`: Percent of the desired count, or a
      number of Pods);
    * unless trafficRouting with dynamicStableScale: the stable exists and both its
      spec.replicas and its existing pods (`current`) equal the desired count; its
      availability is not checked;
    * basic canary only: no other ReplicaSet has available pods (they would serve traffic).

    Example: replicas 4, trafficRouting, setCanaryScale replicas 2: canary 2/2 (available 2)
    and stable 4 -> True; canary 2 with 1 available -> False.
    """
    strategy = _strategy(rollout)
    counts = canary_replica_counts(rollout, canary, stable, others)
    if canary is None or canary.replicas != counts.canary:
        return False
    if not _threshold_met(strategy, canary.available, counts.canary):
        return False
    routed = strategy.traffic_routing is not None
    if not (routed and strategy.dynamic_stable_scale):
        if stable is None or stable.replicas != counts.stable:
            return False
        if (stable.current if stable.current is not None else stable.replicas) != counts.stable:
            return False
    return routed or sum(rs.available for rs in others) == 0
