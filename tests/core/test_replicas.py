"""Canary replica arithmetic (`rollouts.core.replicas`) against Argo Rollouts' own expectations.

Covers: `canary_replica_counts` for basic canaries (maxSurge/maxUnavailable as ints and
percentages, rounding, partial availability, other ReplicaSets, abort, promoteFull,
replicas 0/1) and traffic-routed canaries (setWeight, setCanaryScale, dynamicStableScale,
minPodsPerReplicaSet, abort); the weight approximation table; `resolve_fenceposts`;
`current_set_weight`; `current_canary_scale`; `at_desired_replica_counts`.

Cases named in sentence case are Argo's `utils/replicaset/canary_test.go` cases (same
inputs, same expected counts); kebab-case ids are our additions. Rollouts are built like
Argo's `newRollout`: currentPodHash "canary", stableRS "stable", and unset maxSurge /
maxUnavailable given as 0 (Go's zero value) unless a case asks for the defaults.
"""

from __future__ import annotations

from typing import Any

import pytest

from rollouts.core import replicas
from rollouts.core.replicas import CanaryReplicaCounts, ReplicaSetCounts
from rollouts.model.rollout import Rollout

UNSET = object()


def make_rollout(
    *,
    replicas: int | None = 10,
    steps: list[dict[str, Any]] | None = None,
    index: int | None = None,
    max_surge: Any = 0,
    max_unavailable: Any = 0,
    routed: bool = False,
    abort: bool = False,
    promote_full: bool = False,
    current: str = "canary",
    stable: str = "stable",
    weights: tuple[int, int] | None = None,
    **canary: Any,
) -> Rollout:
    """A canary Rollout; `weights` is the applied (canary, stable) traffic split in status."""
    strategy: dict[str, Any] = {"steps": steps if steps is not None else [], **canary}
    if max_surge is not UNSET:
        strategy["maxSurge"] = max_surge
    if max_unavailable is not UNSET:
        strategy["maxUnavailable"] = max_unavailable
    if routed:
        strategy["trafficRouting"] = {"nginx": {"stableIngress": "app"}}
    status: dict[str, Any] = {
        "currentPodHash": current,
        "stableRS": stable,
        "abort": abort,
        "promoteFull": promote_full,
    }
    if index is not None:
        status["currentStepIndex"] = index
    if weights is not None:
        status["canary"] = {"weights": {"canary": {"weight": weights[0]}, "stable": {"weight": weights[1]}}}
    spec: dict[str, Any] = {"strategy": {"canary": strategy}}
    if replicas is not None:
        spec["replicas"] = replicas
    return Rollout.model_validate({"metadata": {"name": "app"}, "spec": spec, "status": status})


def argo_rollout(weight: int, scale: dict[str, Any] | None = None, **kw: Any) -> Rollout:
    """Argo's newRollout: one setWeight step (then the setCanaryScale, if any), at the last step."""
    steps: list[dict[str, Any]] = [{"setWeight": weight}]
    if scale is not None:
        steps.append({"setCanaryScale": scale})
    return make_rollout(steps=steps, index=len(steps) - 1, **kw)


def rs(name: str, spec: int, available: int, current: int | None = None) -> ReplicaSetCounts:
    return ReplicaSetCounts(name=name, replicas=spec, available=available, current=current)


def case(
    id: str,
    weight: int,
    stable: tuple[int, int],
    canary: tuple[int, int],
    expect: tuple[int, int],
    *,
    older: tuple[int, int] | None = None,
    scale: dict[str, Any] | None = None,
    **kw: Any,
) -> Any:
    """(stable spec, available), (canary spec, available) -> expected (stable, canary)."""
    return pytest.param(
        argo_rollout(weight, scale, **kw),
        rs("stable", *stable),
        rs("canary", *canary),
        [rs("older", *older)] if older is not None else [],
        CanaryReplicaCounts(stable=expect[0], canary=expect[1]),
        id=id,
    )


ARGO_CASES = [
    case(
        "Do not add extra RSs in scaleDownCount when .Spec.Replica < AvailableReplicas",
        100,
        (7, 8),
        (6, 3),
        (7, 6),
        max_surge=3,
    ),
    case("Use max surge int to scale up canary", 20, (10, 10), (0, 0), (10, 2), max_surge=2),
    case("Use max surge percentage to scale up canary", 20, (10, 10), (0, 0), (10, 2), max_surge="20%"),
    case("Scale down extra stable replicas", 20, (10, 10), (2, 2), (8, 2), max_surge="20%"),
    case("Do not go past max surge", 30, (10, 10), (0, 0), (10, 2), max_surge=2),
    case("Use max unavailable int to scale down stableRS", 20, (10, 10), (0, 0), (8, 0), max_unavailable=2),
    case("Use max surge percentage to scale down stableRS", 20, (10, 10), (0, 0), (8, 0), max_unavailable="20%"),
    case("Do not go past max unavailable", 30, (10, 10), (0, 0), (8, 0), max_unavailable=2),
    case("Use Max Surge and Max Unavailable", 50, (10, 10), (0, 0), (9, 2), max_surge=2, max_unavailable=1),
    case("Scale canaryRS to zero on setWeight of 0%", 0, (10, 10), (1, 1), (10, 0), max_surge=1, max_unavailable=1),
    case("Scale stable to zero on setWeight of 100%", 100, (1, 1), (10, 10), (0, 10), max_surge=1, max_unavailable=1),
    case("Do not scale newRS down to zero on non-zero weight", 20, (1, 1), (0, 0), (1, 1), replicas=1, max_surge=1),
    case("Do not scale canaryRS down to zero on non-100 weight", 90, (1, 1), (0, 0), (1, 1), replicas=1, max_surge=1),
    case("Scale up Stable before newRS", 30, (1, 1), (0, 0), (7, 1), older=(3, 3), max_surge=1),
    case("Scale down newRS and stable", 30, (8, 5), (4, 4), (7, 3), max_unavailable=3),
    case("Scale down stable and canary available", 100, (10, 2), (10, 8), (2, 9), max_surge=1),
    case(
        "Do not scale down newRS or stable when older RS count >= scaleDownCount",
        30,
        (8, 6),
        (4, 2),
        (8, 4),
        older=(3, 3),
        max_unavailable=1,
    ),
    case("Do not round past maxSurge with uneven setWeight divisor", 5, (10, 10), (0, 0), (9, 0), max_unavailable=1),
    case(
        "Do not round past maxSurge with uneven setWeight divisor (part 2)",
        5,
        (9, 9),
        (0, 0),
        (9, 1),
        max_unavailable=1,
    ),
    case(
        "Use maxUnavailable of 1 when percentage of maxUnavailable and maxSurge result in 0 replicas",
        10,
        (10, 10),
        (0, 0),
        (9, 0),
        max_surge="0%",
        max_unavailable="0%",
    ),
    case(
        "For canary replicas, use setCanaryScale.replicas when specified along with trafficRouting (and ignore setWeight)",
        100,
        (1, 1),
        (0, 0),
        (1, 9),
        scale={"replicas": 9},
        routed=True,
        replicas=1,
    ),
    case(
        "Use setCanaryScale.weight for canary replicas when specified with trafficRouting (and ignore setWeight)",
        100,
        (4, 4),
        (0, 0),
        (4, 8),
        scale={"weight": 200},
        routed=True,
        replicas=4,
    ),
    case(
        "Ignore setCanaryScale replicas/weight when matchTrafficWeight is true",
        20,
        (10, 10),
        (0, 0),
        (10, 2),
        scale={"replicas": 9, "weight": 100, "matchTrafficWeight": True},
        routed=True,
        max_surge="20%",
    ),
    case(
        "Ignore setCanaryScale when trafficRouting is missing and use setWeight for replicas",
        20,
        (10, 10),
        (0, 0),
        (10, 2),
        scale={"replicas": 9, "weight": 100},
        max_surge="20%",
    ),
    case(
        "honor maxSurge during scale up when stableRS unavailable", 100, (4, 1), (0, 0), (4, 1), replicas=4, max_surge=1
    ),
    case(
        "scale down to maxunavailable without exceeding maxSurge",
        99,
        (3, 3),
        (0, 0),
        (1, 0),
        replicas=3,
        max_unavailable=2,
    ),
    case(
        "scale down to maxunavailable without exceeding maxSurge (part 2)",
        99,
        (1, 1),
        (0, 0),
        (1, 2),
        replicas=3,
        max_unavailable=2,
    ),
    case(
        "honor maxUnavailable during scale down stableRS unavailable",
        100,
        (4, 1),
        (1, 1),
        (3, 1),
        replicas=4,
        max_surge=1,
    ),
    case(
        "honor maxUnavailable when aborting or reducing weight part 1",
        0,
        (0, 0),
        (4, 4),
        (1, 4),
        replicas=4,
        max_surge=1,
    ),
    case(
        "honor maxUnavailable when aborting or reducing weight part 2",
        0,
        (1, 0),
        (4, 4),
        (1, 4),
        replicas=4,
        max_surge=1,
    ),
    case(
        "honor maxUnavailable when aborting or reducing weight part 3",
        0,
        (1, 1),
        (4, 4),
        (1, 3),
        replicas=4,
        max_surge=1,
    ),
    case(
        "promote full does not consider weight",
        1,
        (4, 4),
        (0, 0),
        (0, 4),
        promote_full=True,
        replicas=4,
        max_surge=4,
        max_unavailable=4,
    ),
    case(
        "promote full still honors maxSurge/maxUnavailable",
        1,
        (4, 4),
        (0, 0),
        (4, 3),
        promote_full=True,
        replicas=4,
        max_surge=3,
    ),
    case(
        "aborted with abortScaleDownDelaySeconds:0 and setCanaryScale",
        0,
        (1, 1),
        (1, 1),
        (1, 1),
        scale={"replicas": 1},
        routed=True,
        abort=True,
        abortScaleDownDelaySeconds=0,
        replicas=1,
    ),
    case(
        "aborted with abortScaleDownDelaySeconds>0 and setCanaryScale",
        0,
        (1, 1),
        (1, 1),
        (1, 0),
        scale={"replicas": 1},
        routed=True,
        abort=True,
        abortScaleDownDelaySeconds=30,
        replicas=1,
    ),
    case(
        "Honor MinPodsPerReplicaSet when using trafficRouting and starting canary",
        5,
        (10, 10),
        (0, 0),
        (10, 2),
        routed=True,
        minPodsPerReplicaSet=2,
    ),
    # TestCalculateReplicaCountsForCanaryTrafficRouting
    case(
        "TestCalculateReplicaCountsForCanaryTrafficRouting",
        10,
        (10, 10),
        (0, 0),
        (10, 1),
        routed=True,
        max_unavailable=1,
    ),
    # TestCalculateReplicaCountsForCanaryTrafficRoutingDynamicScale (current weights in status)
    case(
        "dynamic scale: scale down stable",
        10,
        (10, 10),
        (1, 1),
        (9, 1),
        routed=True,
        dynamicStableScale=True,
        weights=(10, 90),
    ),
    case(
        "dynamic scale: take max of desired canary (20) > actual (10)",
        20,
        (10, 10),
        (1, 1),
        (9, 2),
        routed=True,
        dynamicStableScale=True,
        weights=(10, 90),
    ),
    case(
        "dynamic scale: abort leaves canary scaled up while traffic remains",
        20,
        (10, 10),
        (2, 2),
        (10, 2),
        routed=True,
        dynamicStableScale=True,
        abort=True,
        weights=(20, 80),
    ),
    case(
        "dynamic scale: abort reduces canary as its traffic falls",
        20,
        (10, 10),
        (2, 2),
        (10, 1),
        routed=True,
        dynamicStableScale=True,
        abort=True,
        weights=(10, 90),
    ),
]

OUR_CASES = [
    case(
        "defaults-25-percent-surge-and-unavailable",
        20,
        (10, 10),
        (0, 0),
        (8, 2),
        max_surge=UNSET,
        max_unavailable=UNSET,
    ),
    case("other-rs-with-replicas-is-scaled-down-first", 20, (10, 10), (0, 0), (10, 0), older=(2, 2), max_surge=2),
    case("other-rs-at-zero-does-not-block", 20, (10, 10), (0, 0), (10, 2), older=(0, 1), max_surge=2),
    case(
        "basic-abort-drains-canary-within-max-unavailable",
        50,
        (5, 5),
        (5, 5),
        (6, 4),
        abort=True,
        max_surge=1,
        max_unavailable=1,
    ),
    case("weight-decrease-keeps-available-stable-within-surge", 30, (9, 9), (6, 1), (9, 2), max_surge=1),
    case("basic-tie-goes-to-larger-canary", 50, (1, 1), (2, 2), (1, 2), replicas=3, max_unavailable=1),
    case("replicas-1-no-surge-low-weight-keeps-canary-at-0", 40, (1, 1), (0, 0), (1, 0), replicas=1, max_unavailable=1),
    case("replicas-1-no-surge-half-weight-makes-room-first", 50, (1, 1), (0, 0), (0, 0), replicas=1, max_unavailable=1),
    case(
        "replicas-0-basic-scales-everything-down",
        50,
        (2, 2),
        (0, 0),
        (0, 0),
        replicas=0,
        max_surge=UNSET,
        max_unavailable=UNSET,
    ),
    case("replicas-0-traffic-routed", 50, (0, 0), (0, 0), (0, 0), replicas=0, routed=True),
    case("replicas-unset-defaults-to-1", 50, (1, 1), (0, 0), (1, 1), replicas=None, routed=True),
    case("min-pods-ignored-without-traffic-routing", 5, (10, 10), (0, 0), (10, 1), max_surge=1, minPodsPerReplicaSet=3),
    case(
        "min-pods-capped-at-spec-replicas", 10, (3, 3), (0, 0), (3, 3), replicas=3, routed=True, minPodsPerReplicaSet=5
    ),
    case("min-pods-leaves-zero-canary-alone", 0, (10, 10), (0, 0), (10, 0), routed=True, minPodsPerReplicaSet=2),
    case(
        "min-pods-not-applied-to-set-canary-scale-replicas",
        20,
        (10, 10),
        (0, 0),
        (10, 1),
        scale={"replicas": 1},
        routed=True,
        minPodsPerReplicaSet=3,
    ),
    case(
        "traffic-routed-ignores-max-surge", 50, (10, 10), (0, 0), (10, 5), routed=True, max_surge=1, max_unavailable=0
    ),
    case("traffic-routed-weight-rounds-up", 33, (10, 10), (0, 0), (10, 4), routed=True),
    case("traffic-routed-promote-full", 20, (10, 10), (2, 2), (10, 10), routed=True, promote_full=True),
    case(
        "traffic-routed-promote-full-ignores-set-canary-scale",
        20,
        (10, 10),
        (1, 1),
        (10, 10),
        scale={"replicas": 1},
        routed=True,
        promote_full=True,
    ),
    case("traffic-routed-abort-scales-canary-to-zero", 50, (10, 10), (5, 5), (10, 0), routed=True, abort=True),
    case(
        "traffic-routed-abort-delay-unset-ignores-set-canary-scale",
        0,
        (10, 10),
        (2, 2),
        (10, 0),
        scale={"replicas": 2},
        routed=True,
        abort=True,
    ),
    case("dynamic-no-current-weights-uses-desired", 30, (10, 10), (0, 0), (7, 3), routed=True, dynamicStableScale=True),
    case(
        "dynamic-min-pods-raises-stable",
        95,
        (10, 10),
        (0, 0),
        (2, 10),
        routed=True,
        dynamicStableScale=True,
        minPodsPerReplicaSet=2,
    ),
    case(
        "dynamic-set-canary-scale-replicas-raised-by-min-pods",
        20,
        (10, 10),
        (0, 0),
        (10, 2),
        scale={"replicas": 1},
        routed=True,
        dynamicStableScale=True,
        minPodsPerReplicaSet=2,
    ),
    case(
        "dynamic-abort-canary-gone-once-traffic-is-back",
        20,
        (10, 10),
        (2, 2),
        (10, 0),
        routed=True,
        dynamicStableScale=True,
        abort=True,
        weights=(0, 100),
    ),
]


@pytest.mark.parametrize(("rollout", "stable", "canary", "others", "expected"), ARGO_CASES + OUR_CASES)
def test_canary_replica_counts(
    rollout: Rollout,
    stable: ReplicaSetCounts,
    canary: ReplicaSetCounts,
    others: list[ReplicaSetCounts],
    expected: CanaryReplicaCounts,
) -> None:
    assert replicas.canary_replica_counts(rollout, canary, stable, others) == expected


@pytest.mark.parametrize(
    ("current", "stable_name", "new", "stable", "expected"),
    [
        # TestCalculateReplicaCountsForNewDeployment: the new RS is the stable RS.
        pytest.param("canary", "stable", rs("stable", 10, 0), rs("stable", 10, 0), (0, 10), id="new deployment"),
        # TestCalculateReplicaCountsForCanaryStableRSdEdgeCases
        pytest.param("", "", rs("stable", 9, 9), None, (0, 10), id="stable RS edge case: no stable RS"),
        pytest.param(
            "", "", rs("stable", 9, 9), rs("stable", 9, 9), (0, 10), id="stable RS edge case: stable is new RS"
        ),
        # No canary RS yet: the stable makes room first (maxUnavailable 1).
        pytest.param("canary", "stable", None, rs("stable", 10, 10), (9, 0), id="no-canary-rs-yet"),
    ],
)
def test_edge_replica_sets(
    current: str,
    stable_name: str,
    new: ReplicaSetCounts | None,
    stable: ReplicaSetCounts | None,
    expected: tuple[int, int],
) -> None:
    rollout = argo_rollout(10, current=current, stable=stable_name, max_unavailable=1)
    counts = replicas.canary_replica_counts(rollout, new, stable)
    assert (counts.stable, counts.canary) == expected


def test_no_canary_strategy_is_an_error() -> None:
    rollout = Rollout.model_validate({"metadata": {"name": "bg"}, "spec": {"strategy": {"blueGreen": {}}}})
    with pytest.raises(ValueError, match="'bg' has no canary strategy"):
        replicas.canary_replica_counts(rollout, None, None)


def test_malformed_max_surge_is_an_error() -> None:
    with pytest.raises(ValueError, match="maxSurge"):
        replicas.canary_replica_counts(argo_rollout(10, max_surge="ten"), rs("canary", 0, 0), rs("stable", 10, 10))


# Argo's TestApproximateWeightedNewStableReplicaCounts: (replicas, weight, maxSurge) -> (canary, stable).
APPROXIMATIONS = [
    (0, 0, 0, 0, 0),
    (0, 50, 0, 0, 0),
    (0, 100, 0, 0, 0),
    (0, 0, 1, 0, 0),
    (0, 50, 1, 0, 0),
    (0, 100, 1, 0, 0),
    (1, 0, 0, 0, 1),
    (1, 1, 0, 0, 1),
    (1, 49, 0, 0, 1),
    (1, 50, 0, 1, 0),
    (1, 99, 0, 1, 0),
    (1, 100, 0, 1, 0),
    (1, 0, 1, 0, 1),
    (1, 1, 1, 1, 1),
    (1, 49, 1, 1, 1),
    (1, 50, 1, 1, 1),
    (1, 99, 1, 1, 1),
    (1, 100, 1, 1, 0),
    (2, 0, 0, 0, 2),
    (2, 1, 0, 1, 1),
    (2, 50, 0, 1, 1),
    (2, 99, 0, 1, 1),
    (2, 100, 0, 2, 0),
    (2, 0, 1, 0, 2),
    (2, 1, 1, 1, 2),
    (2, 50, 1, 1, 1),
    (2, 99, 1, 2, 1),
    (2, 100, 1, 2, 0),
    (3, 10, 0, 1, 2),
    (3, 25, 0, 1, 2),
    (3, 33, 0, 1, 2),
    (3, 34, 0, 1, 2),
    (3, 49, 0, 1, 2),
    (3, 50, 0, 2, 1),
    (3, 10, 1, 1, 3),
    (3, 25, 1, 1, 3),
    (3, 33, 1, 1, 2),
    (3, 34, 1, 1, 2),
    (3, 49, 1, 2, 2),
    (3, 50, 1, 2, 2),
    (10, 0, 1, 0, 10),
    (10, 1, 0, 1, 9),
    (10, 14, 0, 1, 9),
    (10, 15, 0, 2, 8),
    (10, 16, 0, 2, 8),
    (10, 99, 0, 9, 1),
    (10, 100, 1, 10, 0),
    (10, 1, 1, 1, 10),
    (10, 18, 1, 2, 9),
    (10, 19, 1, 2, 9),
    (10, 20, 1, 2, 8),
    (10, 23, 1, 2, 8),
    (10, 24, 1, 3, 8),
    (10, 25, 1, 3, 8),
    (10, 99, 1, 10, 1),
    (10, 100, 1, 10, 0),
    (2, 75, 0, 0, 2),  # no candidate qualifies: Argo falls back to (0, replicas)
]


@pytest.mark.parametrize(
    ("total", "weight", "surge", "canary", "stable"),
    [pytest.param(*row, id=f"replicas:{row[0]}-weight:{row[1]}-surge:{row[2]}") for row in APPROXIMATIONS],
)
def test_weight_approximation(total: int, weight: int, surge: int, canary: int, stable: int) -> None:
    assert replicas._approximate(total, weight, surge) == (canary, stable)


@pytest.mark.parametrize(
    ("max_surge", "max_unavailable", "desired", "expected"),
    [
        pytest.param("25%", "25%", 10, (3, 2), id="percent-surge-up-unavailable-down"),
        pytest.param(1, 0, 10, (1, 0), id="integers"),
        pytest.param(0, 0, 10, (0, 1), id="both-zero-unavailable-1"),
        pytest.param("0%", "0%", 10, (0, 1), id="zero-percents-unavailable-1"),
        pytest.param("25%", "25%", 1, (1, 0), id="one-replica-defaults"),
        pytest.param("1%", "0%", 2, (1, 0), id="tiny-surge-rounds-up-to-1"),
        pytest.param("0%", "1%", 2, (0, 1), id="tiny-unavailable-rounds-down-then-1"),
        pytest.param("20%", "50%", 3, (1, 1), id="uneven-percentages"),
        pytest.param("100%", "100%", 4, (4, 4), id="hundred-percent"),
        pytest.param("150%", 0, 4, (6, 0), id="surge-over-100-percent-not-capped"),
        pytest.param(None, None, 5, (0, 1), id="unset-counts-as-zero"),
        pytest.param("25", "25", 10, (3, 2), id="bare-number-string-is-a-percentage"),
        pytest.param(3, "0%", 0, (3, 0), id="zero-desired-int-surge"),
        pytest.param("25%", "25%", 0, (0, 1), id="zero-desired-percent"),
    ],
)
def test_resolve_fenceposts(
    max_surge: int | str | None, max_unavailable: int | str | None, desired: int, expected: tuple[int, int]
) -> None:
    assert replicas.resolve_fenceposts(max_surge, max_unavailable, desired) == expected


@pytest.mark.parametrize(
    ("max_surge", "max_unavailable", "message"),
    [
        pytest.param("ten", 0, "maxSurge must be an integer or a percentage", id="word"),
        pytest.param("2.5%", 0, "maxSurge must be an integer or a percentage", id="fraction"),
        pytest.param(0, "-1%", "maxUnavailable must be an integer or a percentage", id="negative-percent"),
        pytest.param(-1, 0, "maxSurge must not be negative", id="negative-int"),
        pytest.param(0, True, "maxUnavailable must be an integer or a percentage", id="bool"),
        pytest.param(0, " 5%", "maxUnavailable must be an integer or a percentage", id="whitespace"),
    ],
)
def test_resolve_fenceposts_rejects(max_surge: Any, max_unavailable: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replicas.resolve_fenceposts(max_surge, max_unavailable, 10)


STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1m"}}]


@pytest.mark.parametrize(
    ("rollout", "expected"),
    [
        pytest.param(make_rollout(steps=STEPS, index=0), 20, id="at-set-weight"),
        pytest.param(make_rollout(steps=STEPS, index=1), 20, id="pause-keeps-previous-weight"),
        pytest.param(make_rollout(steps=STEPS, index=3), 50, id="later-set-weight"),
        pytest.param(make_rollout(steps=STEPS, index=4), 100, id="past-last-step"),
        pytest.param(make_rollout(steps=STEPS), 20, id="unset-index-is-0"),
        pytest.param(make_rollout(steps=[{"pause": {}}, {"setWeight": 10}], index=0), 0, id="no-weight-yet"),
        pytest.param(make_rollout(steps=[], index=0), 100, id="no-steps"),
        pytest.param(make_rollout(steps=STEPS, index=2, abort=True), 0, id="aborted"),
        pytest.param(make_rollout(steps=STEPS, index=1, promote_full=True), 100, id="promote-full"),
        pytest.param(
            make_rollout(steps=STEPS, index=1, abort=True, promote_full=True), 100, id="promote-full-beats-abort"
        ),
        pytest.param(make_rollout(steps=STEPS, index=1, current="stable"), 100, id="current-is-stable"),
        pytest.param(make_rollout(steps=STEPS, index=1, stable=""), 100, id="no-stable-yet"),
        pytest.param(
            make_rollout(steps=[{"setWeight": 10}, {"setCanaryScale": {"weight": 50}}], index=1, routed=True),
            10,
            id="set-canary-scale-does-not-change-weight",
        ),
    ],
)
def test_current_set_weight(rollout: Rollout, expected: int) -> None:
    assert replicas.current_set_weight(rollout) == expected


def test_current_set_weight_without_status() -> None:
    rollout = Rollout.model_validate({"metadata": {"name": "app"}, "spec": {"strategy": {"canary": {"steps": STEPS}}}})
    assert replicas.current_set_weight(rollout) == 100


def test_negative_step_index_is_an_error() -> None:
    with pytest.raises(ValueError, match="currentStepIndex must not be negative"):
        replicas.current_set_weight(make_rollout(steps=STEPS, index=-1))


SCALE_STEPS: list[dict[str, Any]] = [
    {"setCanaryScale": {"replicas": 3}},
    {"setWeight": 10},
    {"setCanaryScale": {"matchTrafficWeight": True}},
    {"setWeight": 20},
]


@pytest.mark.parametrize(
    ("rollout", "expected"),
    [
        pytest.param(make_rollout(steps=SCALE_STEPS, index=0, routed=True), {"replicas": 3}, id="at-step"),
        pytest.param(make_rollout(steps=SCALE_STEPS, index=1, routed=True), {"replicas": 3}, id="sticky"),
        pytest.param(make_rollout(steps=SCALE_STEPS, index=2, routed=True), None, id="match-traffic-weight"),
        pytest.param(make_rollout(steps=SCALE_STEPS, index=3, routed=True), None, id="after-match-traffic-weight"),
        pytest.param(make_rollout(steps=SCALE_STEPS, index=4, routed=True), None, id="past-last-step"),
        pytest.param(make_rollout(steps=SCALE_STEPS, index=1), None, id="needs-traffic-routing"),
        pytest.param(make_rollout(steps=SCALE_STEPS, index=1, routed=True, abort=True), None, id="aborted"),
        pytest.param(
            make_rollout(steps=SCALE_STEPS, index=1, routed=True, abort=True, abortScaleDownDelaySeconds=0),
            {"replicas": 3},
            id="aborted-but-kept-up",
        ),
    ],
)
def test_current_canary_scale(rollout: Rollout, expected: dict[str, int] | None) -> None:
    scale = replicas.current_canary_scale(rollout)
    assert (scale.to_json() if scale is not None else None) == expected


SCS: dict[str, Any] = {"weight": 2, "replicas": 2}


@pytest.mark.parametrize(
    ("rollout", "canary", "stable", "others", "expected"),
    [
        # TestAtDesiredReplicaCountsForCanary (basic canary: setCanaryScale ignored)
        pytest.param(
            argo_rollout(50, SCS, replicas=4, max_surge=1, max_unavailable=1),
            rs("newRS", 2, 2, 2),
            rs("stableRS", 2, 2, 2),
            [],
            True,
            id="we are at desired replica counts and availability",
        ),
        pytest.param(
            argo_rollout(50, SCS, replicas=4, max_surge=1, max_unavailable=1),
            rs("newRS", 2, 1, 2),
            rs("stableRS", 2, 2, 2),
            [],
            False,
            id="new replicaset is not at desired counts or availability",
        ),
        pytest.param(
            argo_rollout(75, {}, replicas=4, max_surge=1, max_unavailable=1),
            rs("newRS", 3, 3, 3),
            rs("stableRS", 2, 2, 2),
            [],
            False,
            id="stable replicaset is not at desired counts or availability",
        ),
        pytest.param(
            argo_rollout(75, {}, replicas=4, max_surge=1, max_unavailable=1),
            rs("newRS", 3, 3, 1),
            rs("stableRS", 1, 0, 1),
            [],
            True,
            id="stable replicaset is not at desired availability but is at correct count",
        ),
        pytest.param(
            argo_rollout(50, SCS, replicas=4, max_surge=1, max_unavailable=1),
            rs("newRS", 2, 2, 2),
            rs("stableRS", 2, 2, 3),
            [],
            False,
            id="test that when status field lags behind spec.replicas we fail",
        ),
        # ours
        pytest.param(
            argo_rollout(50, replicas=4, max_surge=1, max_unavailable=1),
            rs("newRS", 2, 2),
            rs("stableRS", 2, 2),
            [rs("old", 0, 1)],
            False,
            id="basic-other-rs-still-available",
        ),
        pytest.param(
            argo_rollout(50, replicas=4, routed=True),
            rs("newRS", 2, 2),
            rs("stableRS", 4, 4),
            [rs("old", 1, 1)],
            True,
            id="traffic-routed-other-rs-does-not-matter",
        ),
        pytest.param(
            argo_rollout(50, replicas=4, routed=True, dynamicStableScale=True),
            rs("newRS", 2, 2),
            rs("stableRS", 4, 4),
            [],
            True,
            id="dynamic-stable-scale-stable-not-checked",
        ),
        pytest.param(
            argo_rollout(50, replicas=4, routed=True), None, rs("stableRS", 4, 4), [], False, id="no-canary-rs"
        ),
        pytest.param(
            argo_rollout(50, replicas=4, max_surge=1, max_unavailable=1),
            rs("newRS", 4, 4),
            None,
            [],
            False,
            id="basic-no-stable-rs",
        ),
        pytest.param(
            argo_rollout(50, replicas=4, routed=True),
            rs("newRS", 2, 3),
            rs("stableRS", 4, 4),
            [],
            False,
            id="more-available-than-desired-is-not-at-desired",
        ),
        pytest.param(
            argo_rollout(50, routed=True, replicaProgressThreshold={"type": "Percent", "value": 80}),
            rs("newRS", 5, 4),
            rs("stableRS", 10, 10),
            [],
            True,
            id="progress-threshold-percent-met",
        ),
        pytest.param(
            argo_rollout(50, routed=True, replicaProgressThreshold={"type": "Percent", "value": 80}),
            rs("newRS", 5, 3),
            rs("stableRS", 10, 10),
            [],
            False,
            id="progress-threshold-percent-not-met",
        ),
        pytest.param(
            argo_rollout(50, routed=True, replicaProgressThreshold={"type": "Pods", "value": 3}),
            rs("newRS", 5, 3),
            rs("stableRS", 10, 10),
            [],
            True,
            id="progress-threshold-pods-met",
        ),
        pytest.param(
            argo_rollout(50, routed=True, replicaProgressThreshold={"type": "Percent", "value": 80}),
            rs("newRS", 4, 4),
            rs("stableRS", 10, 10),
            [],
            False,
            id="progress-threshold-still-needs-spec-at-desired",
        ),
    ],
)
def test_at_desired_replica_counts(
    rollout: Rollout,
    canary: ReplicaSetCounts | None,
    stable: ReplicaSetCounts | None,
    others: list[ReplicaSetCounts],
    expected: bool,
) -> None:
    assert replicas.at_desired_replica_counts(rollout, canary, stable, others) is expected
