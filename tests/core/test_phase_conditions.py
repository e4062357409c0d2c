"""Phase and condition calculation, as Argo Rollouts computes them, in two tables.

* `rollout_phase` (Argo's CalculateRolloutPhase) over a spec and a status: the order of the
  checks decides, so each case pins one rule and what it wins against.
* The conditions the planner writes (Argo's calculateRolloutConditions /
  checkPausedConditions) in the states a rollout goes through, driven by `Sim` with a fixed
  clock: Progressing, Available, Paused, Completed, Healthy and InvalidSpec with Argo's
  reasons and messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from rollouts.core.phase import rollout_phase
from rollouts.model.rollout import Rollout, RolloutStatus
from rollouts.ops import patches
from tests.core.sim import Sim, blue_green_rollout, canary_rollout

NGINX = {"nginx": {"stableIngress": "app"}}


def ro(manifest: dict[str, Any], status: dict[str, Any], **spec: Any) -> tuple[Rollout, RolloutStatus]:
    manifest["spec"].update(spec)
    rollout = Rollout.model_validate(manifest)
    return rollout, RolloutStatus.model_validate(status)


def canary(status: dict[str, Any], *, routed: bool = True, **spec: Any) -> tuple[Rollout, RolloutStatus]:
    extra: dict[str, Any] = {"trafficRouting": NGINX} if routed else {}
    return ro(canary_rollout([{"setWeight": 50}, {"pause": {}}], **extra), status, **spec)


def blue_green(status: dict[str, Any], **spec: Any) -> tuple[Rollout, RolloutStatus]:
    return ro(blue_green_rollout(replicas=4), status, **spec)


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


# A status at rest: 4 replicas of revision "new", which is stable and active.
DONE = {
    "currentPodHash": "new",
    "stableRS": "new",
    "replicas": 4,
    "updatedReplicas": 4,
    "availableReplicas": 4,
    "blueGreen": {"activeSelector": "new"},
}
# Mid-update: revision "new" is fully up but not yet stable.
UPDATING = {**DONE, "stableRS": "old", "replicas": 8, "blueGreen": {"activeSelector": "old"}}
TIMED_OUT = cond("Progressing", "False", "ProgressDeadlineExceeded", 'ReplicaSet "app-new" has timed out progressing.')
INVALID = cond("InvalidSpec", "True", "InvalidSpec", "spec.selector: required")
PAUSED_AT_STEP = {"pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-11-26T12:00:00Z"}]}

PHASES = [
    # Degraded: invalid spec, abort and the progress deadline come first.
    pytest.param(
        canary({**DONE, "conditions": [INVALID]}), "Degraded", "InvalidSpec: spec.selector: required", id="invalid-spec"
    ),
    pytest.param(
        canary({**UPDATING, "abort": True, "conditions": [INVALID]}),
        "Degraded",
        "InvalidSpec: spec.selector: required",
        id="invalid-spec-beats-abort",
    ),
    pytest.param(
        canary({**UPDATING, "abort": True, "message": "RolloutAborted: Rollout aborted update to revision 2"}),
        "Degraded",
        "RolloutAborted: Rollout aborted update to revision 2",
        id="aborted",
    ),
    pytest.param(
        canary({**UPDATING, "abort": True}),
        "Degraded",
        "RolloutAborted: Rollout aborted update",
        id="aborted-no-message",
    ),
    pytest.param(
        canary({**UPDATING, **PAUSED_AT_STEP, "abort": True}, paused=True),
        "Degraded",
        "RolloutAborted: Rollout aborted update",
        id="abort-beats-pauses",
    ),
    pytest.param(
        canary({**UPDATING, "conditions": [TIMED_OUT]}),
        "Degraded",
        'ProgressDeadlineExceeded: ReplicaSet "app-new" has timed out progressing.',
        id="progress-deadline-exceeded",
    ),
    pytest.param(
        canary({**UPDATING, **PAUSED_AT_STEP, "conditions": [TIMED_OUT]}),
        "Degraded",
        'ProgressDeadlineExceeded: ReplicaSet "app-new" has timed out progressing.',
        id="progress-deadline-beats-pause",
    ),
    pytest.param(
        canary({**UPDATING, "conditions": [{**INVALID, "status": "False"}]}),
        "Progressing",
        "waiting for all steps to complete",
        id="invalid-spec-false-is-ignored",
    ),
    # Paused: spec.paused, then the first pause condition's reason.
    pytest.param(canary(DONE, paused=True), "Paused", "manually paused", id="spec-paused-at-rest"),
    pytest.param(
        canary({**UPDATING, **PAUSED_AT_STEP}, paused=True), "Paused", "manually paused", id="spec-paused-wins"
    ),
    pytest.param(canary({**UPDATING, **PAUSED_AT_STEP}), "Paused", "CanaryPauseStep", id="canary-pause-step"),
    pytest.param(
        canary({**UPDATING, "pauseConditions": [{"reason": "InconclusiveAnalysisRun", "startTime": "x"}]}),
        "Paused",
        "InconclusiveAnalysisRun",
        id="inconclusive-analysis",
    ),
    pytest.param(
        blue_green({**UPDATING, "pauseConditions": [{"reason": "BlueGreenPause", "startTime": "x"}]}),
        "Paused",
        "BlueGreenPause",
        id="blue-green-pause",
    ),
    # Progressing: replicas, then what the strategy still waits for.
    pytest.param(
        canary({**UPDATING, "updatedReplicas": 1, "availableReplicas": 5}),
        "Progressing",
        "more replicas need to be updated",
        id="more-replicas-to-update",
    ),
    pytest.param(
        canary({**UPDATING, "availableReplicas": 3}),
        "Progressing",
        "updated replicas are still becoming available",
        id="updated-not-yet-available",
    ),
    pytest.param(canary(UPDATING), "Progressing", "waiting for all steps to complete", id="canary-steps-pending"),
    pytest.param(
        canary(UPDATING, routed=False),
        "Progressing",
        "old replicas are pending termination",
        id="basic-canary-old-replicas-checked-before-steps",
    ),
    pytest.param(
        canary({**DONE, "replicas": 6}, routed=False),
        "Progressing",
        "old replicas are pending termination",
        id="basic-canary-old-replicas-after-promotion",
    ),
    pytest.param(canary({**DONE, "replicas": 8}), "Healthy", "", id="routed-canary-old-replicas-in-scale-down-delay"),
    pytest.param(
        blue_green(UPDATING), "Progressing", "active service cutover pending", id="blue-green-cutover-pending"
    ),
    pytest.param(
        blue_green({**UPDATING, "blueGreen": {}}),
        "Progressing",
        "active service cutover pending",
        id="blue-green-no-active-selector",
    ),
    pytest.param(
        blue_green({**UPDATING, "blueGreen": {"activeSelector": "new"}}),
        "Progressing",
        "waiting for analysis to complete",
        id="blue-green-post-promotion-analysis",
    ),
    pytest.param(blue_green({**DONE, "replicas": 8}), "Healthy", "", id="blue-green-old-active-in-scale-down-delay"),
    # Healthy.
    pytest.param(canary(DONE), "Healthy", "", id="canary-healthy"),
    pytest.param(blue_green(DONE), "Healthy", "", id="blue-green-healthy"),
    pytest.param(
        canary({**DONE, "updatedReplicas": 1, "replicas": 1, "availableReplicas": 1}, replicas=None),
        "Healthy",
        "",
        id="unset-replicas-default-to-one",
    ),
]


@pytest.mark.parametrize(("case", "phase", "message"), PHASES)
def test_rollout_phase(case: tuple[Rollout, RolloutStatus], phase: str, message: str) -> None:
    rollout, status = case
    result = rollout_phase(rollout, status)
    assert (result.phase, result.message) == (phase, message)


# --- conditions, through the planner ---------------------------------------------------------------

STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]


def deployed(**spec: Any) -> Sim:
    manifest = canary_rollout(STEPS)
    manifest["spec"].update(spec)
    sim = Sim(manifest)
    sim.converge()
    return sim


def first_reconcile() -> Sim:
    sim = Sim(canary_rollout(STEPS))
    sim.reconcile()
    return sim


def healthy() -> Sim:
    return deployed()


def update_started() -> Sim:
    sim = deployed()
    sim.set_image("app:v2")
    sim.reconcile()
    sim.reconcile()
    return sim


def at_pause_step() -> Sim:
    sim = deployed()
    sim.set_image("app:v2")
    sim.converge()
    return sim


def spec_paused() -> Sim:
    sim = deployed()
    sim.manifest["spec"]["paused"] = True
    sim.converge()
    return sim


def resumed() -> Sim:
    sim = at_pause_step()
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    return sim


def aborted() -> Sim:
    sim = at_pause_step()
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.converge()
    return sim


def retried() -> Sim:
    sim = aborted()
    sim.status = patches.retry(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    return sim


def retried_after_scale_down() -> Sim:
    """Retry once the aborted canary is gone: the first reconcile only scales it up again."""
    sim = aborted()
    sim.advance(30)  # abortScaleDownDelaySeconds (default 30): the canary goes to 0
    sim.converge()
    assert sim.replicas() == {1: 4, 2: 0}
    sim.status = patches.retry(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    return sim


def retried_and_progressing() -> Sim:
    sim = retried_after_scale_down()
    sim.settle()
    sim.reconcile()
    return sim


def resumed_mid_step() -> Sim:
    """spec.paused set and cleared while the canary's pods are still starting: no progress yet."""
    sim = deployed()
    sim.set_image("app:v2")
    sim.reconcile()
    sim.reconcile()
    sim.manifest["spec"]["paused"] = True
    sim.reconcile()
    assert sim.phase == "Paused"
    sim.manifest["spec"]["paused"] = False
    sim.advance(5)
    sim.reconcile()
    return sim


def spec_unpaused() -> Sim:
    sim = spec_paused()
    sim.manifest["spec"]["paused"] = False
    sim.converge()
    return sim


def timed_out() -> Sim:
    sim = deployed(progressDeadlineSeconds=60)
    sim.set_image("app:v2")
    sim.reconcile()
    sim.reconcile()
    sim.advance(61)
    sim.reconcile()
    return sim


def timed_out_and_aborted() -> Sim:
    sim = deployed(progressDeadlineSeconds=60, progressDeadlineAbort=True)
    sim.set_image("app:v2")
    sim.reconcile()
    sim.reconcile()
    sim.advance(61)
    sim.reconcile()
    sim.reconcile()
    return sim


def promoted() -> Sim:
    sim = at_pause_step()
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()
    return sim


def promoted_old_stable_gone() -> Sim:
    sim = promoted()
    sim.advance(30)  # scaleDownDelaySeconds (default 30 with a router)
    sim.converge()
    assert sim.replicas() == {1: 0, 2: 4}
    return sim


def pods_lost_after_promotion() -> Sim:
    sim = promoted_old_stable_gone()
    name = next(name for name, rs in sim.rs.items() if rs.revision == 2)
    sim.rs[name] = replace(sim.rs[name], ready=3, available=3)
    sim.reconcile()
    return sim


def invalid() -> Sim:
    sim = deployed()
    sim.invalid = "spec.selector: required"
    sim.reconcile()
    return sim


def invalid_fixed() -> Sim:
    sim = invalid()
    sim.invalid = None
    sim.reconcile()
    return sim


def blue_green_paused() -> Sim:
    sim = Sim(blue_green_rollout(autoPromotionEnabled=False))
    sim.converge()
    sim.set_image("app:v2")
    sim.converge()
    return sim


def blue_green_active_lost_a_pod() -> Sim:
    """The preview is up (3 of 3) but the active ReplicaSet has 2 of 3 pods available: 5 pods
    are available in all, yet the active Service is not backed by a saturated ReplicaSet."""
    sim = blue_green_paused()
    name = next(name for name, rs in sim.rs.items() if rs.revision == 1)
    sim.rs[name] = replace(sim.rs[name], ready=2, available=2)
    sim.reconcile()
    assert sim.status is not None and sim.status["availableReplicas"] == 5
    return sim


def blue_green_promoted() -> Sim:
    sim = blue_green_paused()
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()
    return sim


# Argo's code adds Paused and Healthy only once they first hold (checkPausedConditions,
# calculateRolloutConditions), then flips them; the others are always present.
NOT_PAUSED = cond("Paused", "False", "RolloutPaused", "Rollout is paused")
IS_PAUSED = cond("Paused", "True", "RolloutPaused", "Rollout is paused")
COMPLETED = cond("Completed", "True", "RolloutCompleted", "RolloutCompleted")
NOT_COMPLETED = cond("Completed", "False", "RolloutCompleted", "RolloutCompleted")
HEALTHY = cond("Healthy", "True", "RolloutHealthy", "Rollout is healthy")
NOT_HEALTHY = cond("Healthy", "False", "RolloutHealthy", "Rollout is not healthy")
AVAILABLE = cond("Available", "True", "AvailableReason", "Rollout has minimum availability")
NOT_AVAILABLE = cond("Available", "False", "AvailableReason", "Rollout does not have minimum availability")
PAUSED_PROGRESSING = cond("Progressing", "Unknown", "RolloutPaused", "Rollout is paused")
RESUMED = cond("Progressing", "Unknown", "RolloutResumed", "Rollout is resumed")
RETRYING = cond("Progressing", "Unknown", "RolloutRetry", "Retrying Rollout after abort")


def progressing(status: str, reason: str, message: str) -> dict[str, str]:
    return cond("Progressing", status, reason, message)


CONDITIONS = [
    pytest.param(
        first_reconcile,
        "Progressing",
        [
            NOT_AVAILABLE,
            progressing("True", "ReplicaSetUpdated", 'ReplicaSet "app-{1}" is progressing.'),
            COMPLETED,
        ],
        id="initial-deploy-starting-no-paused-or-healthy-yet",
    ),
    pytest.param(
        healthy,
        "Healthy",
        [
            AVAILABLE,
            progressing("True", "NewReplicaSetAvailable", 'ReplicaSet "app-{1}" has successfully progressed.'),
            COMPLETED,
            HEALTHY,
        ],
        id="healthy-never-paused",
    ),
    pytest.param(
        update_started,
        "Progressing",
        [
            AVAILABLE,
            progressing("True", "ReplicaSetUpdated", 'ReplicaSet "app-{2}" is progressing.'),
            NOT_COMPLETED,
            NOT_HEALTHY,
        ],
        id="update-progressing",
    ),
    pytest.param(
        at_pause_step,
        "Paused",
        [AVAILABLE, PAUSED_PROGRESSING, IS_PAUSED, NOT_COMPLETED, NOT_HEALTHY],
        id="paused-at-step",
    ),
    pytest.param(
        spec_paused, "Paused", [AVAILABLE, PAUSED_PROGRESSING, IS_PAUSED, COMPLETED, NOT_HEALTHY], id="spec-paused"
    ),
    pytest.param(
        spec_unpaused,
        "Healthy",
        [
            AVAILABLE,
            progressing("True", "NewReplicaSetAvailable", 'ReplicaSet "app-{1}" has successfully progressed.'),
            NOT_PAUSED,
            COMPLETED,
            HEALTHY,
        ],
        id="spec-unpaused-at-rest",
    ),
    pytest.param(
        resumed,
        "Progressing",
        [
            AVAILABLE,
            # Resumed, and the pause step completed in the same reconcile: progress.
            progressing("True", "ReplicaSetUpdated", 'ReplicaSet "app-{2}" is progressing.'),
            NOT_PAUSED,
            NOT_COMPLETED,
            NOT_HEALTHY,
        ],
        id="promoted-from-pause-step-progresses",
    ),
    pytest.param(
        resumed_mid_step,
        "Progressing",
        [AVAILABLE, RESUMED, NOT_PAUSED, NOT_COMPLETED, NOT_HEALTHY],
        id="resumed-without-progress-yet",
    ),
    pytest.param(
        aborted,
        "Degraded",
        [
            AVAILABLE,
            progressing("False", "RolloutAborted", "Rollout aborted update to revision 2"),
            IS_PAUSED,  # Argo leaves Paused as it was (True at the pause step) while aborted
            NOT_COMPLETED,
            NOT_HEALTHY,
        ],
        id="aborted-at-pause-step",
    ),
    pytest.param(
        retried,
        "Progressing",
        [
            AVAILABLE,
            # The canary was still up: step 0 completes at once, which is progress.
            progressing("True", "ReplicaSetUpdated", 'ReplicaSet "app-{2}" is progressing.'),
            IS_PAUSED,  # still untouched in the reconcile that sees the retry
            NOT_COMPLETED,
            NOT_HEALTHY,
        ],
        id="retried-canary-still-up",
    ),
    pytest.param(
        retried_after_scale_down,
        "Progressing",
        [AVAILABLE, RETRYING, IS_PAUSED, NOT_COMPLETED, NOT_HEALTHY],
        id="retried-waiting-for-canary",
    ),
    pytest.param(
        retried_and_progressing,
        "Progressing",
        [
            AVAILABLE,
            progressing("True", "ReplicaSetUpdated", 'ReplicaSet "app-{2}" is progressing.'),
            NOT_PAUSED,
            NOT_COMPLETED,
            NOT_HEALTHY,
        ],
        id="retried-then-progressing",
    ),
    pytest.param(
        timed_out,
        "Degraded",
        [
            AVAILABLE,
            progressing("False", "ProgressDeadlineExceeded", 'ReplicaSet "app-{2}" has timed out progressing.'),
            NOT_COMPLETED,
            NOT_HEALTHY,
        ],
        id="progress-deadline-exceeded",
    ),
    pytest.param(
        timed_out_and_aborted,
        "Degraded",
        [
            AVAILABLE,
            progressing(
                "False",
                "RolloutAborted",
                'Rollout aborted update to revision 2: ReplicaSet "app-{2}" has timed out progressing.',
            ),
            NOT_COMPLETED,
            NOT_HEALTHY,
        ],
        id="progress-deadline-abort",
    ),
    pytest.param(
        promoted,
        "Healthy",
        [
            AVAILABLE,
            progressing("True", "NewReplicaSetAvailable", 'ReplicaSet "app-{2}" has successfully progressed.'),
            NOT_PAUSED,
            COMPLETED,
            NOT_HEALTHY,  # Argo's RolloutHealthy: the old stable's pods (scale-down delay) still run
        ],
        id="promoted-old-stable-in-scale-down-delay",
    ),
    pytest.param(
        promoted_old_stable_gone,
        "Healthy",
        [
            AVAILABLE,
            progressing("True", "NewReplicaSetAvailable", 'ReplicaSet "app-{2}" has successfully progressed.'),
            NOT_PAUSED,
            COMPLETED,
            HEALTHY,
        ],
        id="promoted-old-stable-scaled-down",
    ),
    pytest.param(
        pods_lost_after_promotion,
        "Progressing",
        [
            NOT_AVAILABLE,
            progressing("True", "ReplicaSetNotAvailable", "Rollout does not have minimum availability"),
            NOT_PAUSED,
            COMPLETED,
            NOT_HEALTHY,
        ],
        id="healthy-rollout-loses-a-pod",
    ),
    pytest.param(
        blue_green_paused,
        "Paused",
        [AVAILABLE, PAUSED_PROGRESSING, IS_PAUSED, NOT_COMPLETED, NOT_HEALTHY],
        id="blue-green-paused",
    ),
    pytest.param(
        blue_green_active_lost_a_pod,
        "Paused",
        [NOT_AVAILABLE, PAUSED_PROGRESSING, IS_PAUSED, NOT_COMPLETED, NOT_HEALTHY],
        id="blue-green-available-needs-saturated-active",
    ),
    pytest.param(
        blue_green_promoted,
        "Healthy",
        [
            AVAILABLE,
            progressing("True", "NewReplicaSetAvailable", 'ReplicaSet "app-{2}" has successfully progressed.'),
            NOT_PAUSED,
            COMPLETED,
            NOT_HEALTHY,  # the old active's pods (scale-down delay) still count as available
        ],
        id="blue-green-promoted",
    ),
]


def _expand(expected: list[dict[str, str]], sim: Sim) -> list[dict[str, str]]:
    hashes = {f"{{{rs.revision}}}": rs.pod_hash for rs in sim.rs.values()}
    out = []
    for c in expected:
        message = c["message"]
        for key, value in hashes.items():
            message = message.replace(key, value)
        out.append({**c, "message": message})
    return out


@pytest.mark.parametrize(("state", "phase", "expected"), CONDITIONS)
def test_conditions(state: Callable[[], Sim], phase: str, expected: list[dict[str, str]]) -> None:
    sim = state()
    assert sim.status is not None
    got = [{k: c[k] for k in ("type", "status", "reason", "message")} for c in sim.status["conditions"]]
    assert sorted(got, key=lambda c: c["type"]) == sorted(_expand(expected, sim), key=lambda c: c["type"])
    assert sim.phase == phase


@pytest.mark.parametrize(
    ("state", "message"),
    [
        pytest.param(invalid, "spec.selector: required", id="invalid-spec-set"),
        pytest.param(invalid_fixed, None, id="invalid-spec-cleared-when-fixed"),
    ],
)
def test_invalid_spec_condition(state: Callable[[], Sim], message: str | None) -> None:
    sim = state()
    assert sim.status is not None
    invalid_spec = [c for c in sim.status["conditions"] if c["type"] == "InvalidSpec"]
    if message is None:
        assert invalid_spec == [] and sim.phase == "Healthy"
    else:
        assert [(c["status"], c["reason"], c["message"]) for c in invalid_spec] == [("True", "InvalidSpec", message)]
        assert (sim.phase, sim.status["message"]) == ("Degraded", f"InvalidSpec: {message}")


def test_condition_times_change_only_on_transitions() -> None:
    """lastTransitionTime moves when the status flips; lastUpdateTime when the condition is rewritten."""
    sim = at_pause_step()
    assert sim.status is not None
    paused = next(c for c in sim.status["conditions"] if c["type"] == "Paused")
    sim.advance(30)
    sim.reconcile()
    again = next(c for c in sim.status["conditions"] if c["type"] == "Paused")
    assert again == paused, "an unchanged condition is not rewritten"
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    flipped = next(c for c in sim.status["conditions"] if c["type"] == "Paused")
    assert flipped["status"] == "False"
    assert flipped["lastTransitionTime"] == flipped["lastUpdateTime"] == "2026-11-26T12:00:30Z"
