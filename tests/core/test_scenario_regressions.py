"""Planner behaviours the end-to-end scenarios (tests/integration/test_rollout_scenarios_*.py)
found wrong, pinned down through the pure planner with a fixed clock.

Each case is one Argo Rollouts behaviour, named after the scenario that exposed it:
promote --full after an abort, rollbackWindow measured from the stable revision, the
duration outcome of rollbacks and retries, no traffic to a new canary revision before its
pods are available, and dynamicStableScale's abort draining the canary with its traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from rollouts.ops import patches
from tests.core.sim import Sim, canary_rollout

HALF: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
NGINX = {"nginx": {"stableIngress": "app"}}


def deployed(steps: list[dict[str, Any]] = HALF, **spec: Any) -> Sim:
    manifest = canary_rollout(steps, **{k: v for k, v in spec.items() if k != "rollbackWindow"})
    if "rollbackWindow" in spec:
        manifest["spec"]["rollbackWindow"] = spec["rollbackWindow"]
    sim = Sim(manifest)
    sim.converge()
    assert sim.phase == "Healthy"
    return sim


def update_to(sim: Sim, image: str, *, promote: bool) -> None:
    sim.set_image(image)
    sim.converge()
    if promote:
        sim.status = patches.promote(sim.rollout().to_json(), full=True).obj["status"]
        sim.converge()
        assert sim.phase == "Healthy"


def duration(sim: Sim) -> dict[str, Any]:
    assert sim.status is not None
    return dict(sim.status.get("duration") or {})


def set_available(sim: Sim, revision: int, available: int) -> None:
    name = next(name for name, rs in sim.rs.items() if rs.revision == revision)
    sim.rs[name] = replace(sim.rs[name], ready=available, available=available)


# --- promote --full after abort (TestCanaryPromoteFull, third case) ---------------------------------


@pytest.mark.parametrize(
    "background",
    [
        pytest.param(None, id="no-analysis"),
        pytest.param({"templates": [{"templateName": "t"}], "startingStep": 2}, id="background-analysis-not-started"),
    ],
)
def test_promote_full_after_abort_promotes(background: dict[str, Any] | None) -> None:
    spec: dict[str, Any] = {"analysis": background} if background else {}
    sim = deployed(**spec)
    update_to(sim, "app:v2", promote=False)
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.phase == "Degraded"

    sim.status = patches.promote(sim.rollout().to_json(), full=True).obj["status"]
    sim.converge()
    assert sim.status is not None
    assert (sim.phase, sim.step, sim.status["stableRS"]) == ("Healthy", 2, sim.hash_of(2))
    assert not sim.status.get("abort") and not sim.status.get("promoteFull")
    assert duration(sim)["completionStatus"] == "FastPromoted"
    assert sim.runs == {}, "a full promotion starts no analysis"


# --- rollbackWindow and the outcome of rollbacks (RollbackSuite, DurationSuite) ------------------


def undo_from_v3_in_flight(window: int) -> Sim:
    """v1 -> v2 (stable) -> v3 in flight, then back to v1's template."""
    sim = deployed(rollbackWindow={"revisions": window})
    update_to(sim, "app:v2", promote=True)
    update_to(sim, "app:v3", promote=False)
    sim.set_image("app:v1")
    sim.converge()
    return sim


def undo_from_v3_stable(window: int) -> Sim:
    """v1 -> v2 -> v3 (stable), then back to v1's template."""
    sim = deployed(rollbackWindow={"revisions": window})
    update_to(sim, "app:v2", promote=True)
    update_to(sim, "app:v3", promote=True)
    sim.set_image("app:v1")
    sim.converge()
    return sim


def back_to_unpromoted_v2(window: int) -> Sim:
    """v1 (stable) -> v2 in flight -> v3 in flight, then back to v2: newer than the stable, no rollback."""
    sim = deployed(rollbackWindow={"revisions": window})
    update_to(sim, "app:v2", promote=False)
    update_to(sim, "app:v3", promote=False)
    sim.set_image("app:v2")
    sim.converge()
    return sim


@pytest.mark.parametrize(
    ("scenario", "window", "phase", "step", "completion"),
    [
        pytest.param(undo_from_v3_in_flight, 1, "Healthy", 2, "FastRolledBack", id="in-flight-revision-not-counted"),
        pytest.param(undo_from_v3_stable, 2, "Healthy", 2, "FastRolledBack", id="one-between-window-2"),
        pytest.param(undo_from_v3_stable, 1, "Paused", 1, "RolledBack", id="one-between-window-1-outside"),
        pytest.param(back_to_unpromoted_v2, 5, "Paused", 1, None, id="unpromoted-revision-runs-its-steps"),
    ],
)
def test_rollback_window_counts_revisions_between_target_and_stable(
    scenario: Callable[[int], Sim], window: int, phase: str, step: int, completion: str | None
) -> None:
    sim = scenario(window)
    assert (sim.phase, sim.step) == (phase, step)
    assert duration(sim).get("completionStatus") == completion
    if phase == "Healthy":
        assert duration(sim).get("finishedAt")
    else:
        assert not duration(sim).get("finishedAt"), "outcome pending until the rollback completes"


def test_rollback_outside_the_window_completes_rolled_back() -> None:
    sim = undo_from_v3_stable(1)
    started = duration(sim)["rolloutStartedAt"]
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.phase == "Healthy"
    assert duration(sim) == {
        "rolloutStartedAt": started,
        "finishedAt": duration(sim)["finishedAt"],
        "completionStatus": "RolledBack",
    }


def test_retry_restarts_the_duration_clock() -> None:
    sim = deployed()
    update_to(sim, "app:v2", promote=False)
    first = duration(sim)["rolloutStartedAt"]
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert duration(sim)["completionStatus"] == "Aborted"
    sim.advance(5)
    sim.status = patches.retry(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.phase == "Paused"
    assert duration(sim) == {"rolloutStartedAt": "2026-11-26T12:00:05Z"} and first == "2026-11-26T12:00:00Z"


# --- traffic to a new canary revision ------------------------------------------------------------


def test_template_change_mid_canary_sends_no_traffic_before_the_new_canary_is_available() -> None:
    sim = deployed()
    update_to(sim, "app:v2", promote=False)
    assert sim.weight == 50
    sim.set_image("app:v3")
    sim.reconcile()
    sim.reconcile()
    assert sim.replicas() == {1: 4, 2: 0, 3: 2}
    assert sim.weight == 0, "revision 3 has no available pod yet"
    sim.converge()
    assert (sim.step, sim.weight) == (1, 50)


# --- dynamicStableScale abort (TestCanaryDynamicStableScale) ---------------------------------------


def test_dynamic_stable_scale_abort_returns_traffic_as_the_stable_becomes_available() -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    sim = deployed(steps, trafficRouting=NGINX, dynamicStableScale=True)
    update_to(sim, "app:v2", promote=False)
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert (sim.step, sim.weight, sim.replicas()) == (3, 75, {1: 1, 2: 3})

    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    observed = []
    for stable_available in (1, 2, 3, 4, 4, 4):
        set_available(sim, 1, min(stable_available, sim.replicas()[1]))
        sim.reconcile()
        observed.append((sim.weight, sim.replicas()[2]))
    # weight = min(current, 100 - 25 * available stable pods); the canary follows one reconcile later,
    # and goes to 0 without waiting for the default abortScaleDownDelaySeconds.
    assert observed == [(75, 3), (50, 3), (25, 2), (0, 1), (0, 0), (0, 0)]
    assert sim.phase == "Degraded" and sim.replicas() == {1: 4, 2: 0}


# --- abortScaleDownDelaySeconds with dynamicStableScale (TestCanaryDynamicStableScaleAbortScaleDownDelay)


def _aborted_at_75(**spec: Any) -> Sim:
    steps: list[dict[str, Any]] = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    sim = deployed(steps, trafficRouting=NGINX, **spec)
    update_to(sim, "app:v2", promote=False)
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    return sim


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {"dynamicStableScale": True, "abortScaleDownDelaySeconds": 10},
            # (weight, canary pods, scale-down deadline set) as the stable's pods become available:
            # the canary stays at 3 until 10 s after the stable is whole, traffic follows the stable.
            [(75, 3, False), (50, 3, False), (25, 3, False), (0, 3, True), (0, 3, True)],
            id="dynamic-explicit-delay-keeps-canary-until-deadline",
        ),
        pytest.param(
            {"dynamicStableScale": True},
            [(75, 3, False), (50, 3, False), (25, 2, False), (0, 1, False), (0, 0, False)],
            id="dynamic-default-drains-with-traffic",
        ),
    ],
)
def test_dynamic_stable_scale_abort_delay(spec: dict[str, Any], expected: list[tuple[int, int, bool]]) -> None:
    sim = _aborted_at_75(**spec)
    observed = []
    for stable_available in (1, 2, 3, 4, 4):
        set_available(sim, 1, min(stable_available, sim.replicas()[1]))
        sim.reconcile()
        canary = next(rs for rs in sim.rs.values() if rs.revision == 2)
        observed.append((sim.weight, canary.replicas, canary.scale_down_at is not None))
    assert observed == expected
    assert sim.replicas()[1] == 4 and sim.phase == "Degraded"
    if spec.get("abortScaleDownDelaySeconds"):
        sim.advance(9)
        sim.reconcile()
        assert sim.replicas()[2] == 3, "before the deadline"
        sim.advance(1)
        sim.reconcile()
        canary = next(rs for rs in sim.rs.values() if rs.revision == 2)
        assert (canary.replicas, canary.scale_down_at) == (0, None), "scaled down at the deadline, mark removed"


def test_abort_delay_starts_once_the_stable_is_whole() -> None:
    """Argo marks the canary with its deadline only when every stable pod is available."""
    sim = deployed(trafficRouting=NGINX, abortScaleDownDelaySeconds=10)
    update_to(sim, "app:v2", promote=False)
    set_available(sim, 1, 3)  # a stable pod restarts
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    assert sim.weight == 0 and sim.replicas() == {1: 4, 2: 2}
    sim.advance(60)
    sim.reconcile()
    assert sim.replicas()[2] == 2, "no deadline while the stable is short of a pod"
    set_available(sim, 1, 4)
    result = sim.reconcile()
    assert result.requeue_after == pytest.approx(10)
    sim.advance(10)
    sim.reconcile()
    assert sim.replicas() == {1: 4, 2: 0}


# --- the start time of a rollback (DurationSuite) -----------------------------------------------------


def _v3_in_flight_from_v2_stable() -> Sim:
    sim = deployed()
    update_to(sim, "app:v2", promote=True)
    sim.advance(100)
    update_to(sim, "app:v3", promote=False)  # started at T0 + 100 s
    sim.advance(100)
    return sim


def _undo_to_v1(sim: Sim) -> None:
    sim.set_image("app:v1")  # older than the stable (v2), outside any window: RolledBack
    sim.converge()


def _abort_then_undo(sim: Sim) -> None:
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.converge()
    sim.advance(100)
    _undo_to_v1(sim)


def _undo_then_abort(sim: Sim) -> None:
    _undo_to_v1(sim)
    sim.advance(100)
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.converge()


@pytest.mark.parametrize(
    ("operation", "completion", "finished"),
    [
        pytest.param(_undo_to_v1, "RolledBack", False, id="rollback-of-update-in-flight"),
        pytest.param(_abort_then_undo, "RolledBack", False, id="rollback-of-aborted-update"),
        pytest.param(_undo_then_abort, "Aborted", True, id="aborted-rollback"),
    ],
)
def test_rollback_keeps_the_original_start_time(
    operation: Callable[[Sim], None], completion: str, finished: bool
) -> None:
    sim = _v3_in_flight_from_v2_stable()
    operation(sim)
    assert duration(sim)["rolloutStartedAt"] == "2026-11-26T12:01:40Z", "v3's start"
    assert duration(sim)["completionStatus"] == completion
    assert bool(duration(sim).get("finishedAt")) == finished
