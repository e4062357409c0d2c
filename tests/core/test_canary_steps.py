"""Canary step progression, pauses, promote, abort and analysis, through the pure planner.

Each case drives `Sim` (a deterministic platform stand-in) with a fixed clock; pods become
available only when a case says so, and time moves only by `advance`.
"""

from __future__ import annotations

from typing import Any

import pytest

from rollouts.ops import patches
from tests.core.sim import Sim, canary_rollout

STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"setWeight": 50}, {"pause": {}}]


def deployed(steps: list[dict[str, Any]] = STEPS, **kw: Any) -> Sim:
    sim = Sim(canary_rollout(steps, **kw))
    sim.converge()
    assert sim.phase == "Healthy"
    return sim


def test_initial_deploy_skips_steps_and_is_stable() -> None:
    sim = Sim(canary_rollout(STEPS))
    sim.reconcile()
    assert sim.step == 4
    assert sim.replicas() == {1: 4}
    assert sim.phase == "Progressing"
    sim.converge()
    assert sim.phase == "Healthy"
    assert sim.status is not None and sim.status["stableRS"] == sim.hash_of(1)
    assert sim.services == {"app": sim.hash_of(1), "app-canary": sim.hash_of(1)}
    assert sim.weight == 0


def test_update_walks_steps_with_weights_and_replicas() -> None:
    sim = deployed()
    sim.set_image("app:v2")
    sim.reconcile()
    assert sim.step == 0 and sim.replicas() == {1: 4, 2: 1}
    assert sim.weight == 0, "no traffic before the canary pod is available"
    sim.settle()
    sim.converge()
    assert sim.step == 1 and sim.pause_reasons() == ["CanaryPauseStep"]
    assert sim.weight == 20 and sim.phase == "Paused"
    assert sim.last is not None and sim.last.requeue_after == pytest.approx(30)
    sim.advance(29)
    sim.converge()
    assert sim.step == 1, "pause not over before its duration"
    sim.advance(1)
    sim.converge()
    assert sim.step == 3 and sim.weight == 50 and sim.replicas() == {1: 4, 2: 2}
    assert sim.pause_reasons() == ["CanaryPauseStep"]
    sim.advance(3600)
    sim.converge()
    assert sim.step == 3, "an indefinite pause waits for promote"


@pytest.mark.parametrize(
    ("full", "expected_completion"),
    [pytest.param(False, "Promoted", id="promote"), pytest.param(True, "FastPromoted", id="promote-full")],
)
def test_promote_to_stable(full: bool, expected_completion: str) -> None:
    sim = deployed()
    sim.set_image("app:v2")
    sim.converge()
    assert sim.step == 1
    if full:
        sim.status = patches.promote(sim.rollout().to_json(), full=True).obj["status"]
        sim.converge()
    else:
        for _ in range(2):  # the timed pause, then the indefinite one
            sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
            sim.converge()
    assert sim.phase == "Healthy"
    assert sim.status is not None
    assert sim.status["stableRS"] == sim.hash_of(2)
    assert sim.status["duration"]["completionStatus"] == expected_completion
    assert sim.weight == 0 and sim.services["app"] == sim.hash_of(2)
    assert sim.replicas() == {1: 4, 2: 4}, "the old stable stays up for scaleDownDelaySeconds (30)"
    sim.advance(30)
    sim.converge()
    assert sim.replicas() == {1: 0, 2: 4}


def test_weight_rises_only_when_canary_pods_are_available() -> None:
    sim = deployed([{"setWeight": 50}, {"pause": {}}])
    sim.set_image("app:v2")
    sim.reconcile()
    sim.reconcile()
    assert sim.weight == 0 and sim.step == 0
    sim.settle()
    sim.reconcile()
    assert sim.weight == 50


def test_basic_canary_abort_scales_canary_down_at_once() -> None:
    sim = Sim(canary_rollout(STEPS), implicit_router=False)
    sim.converge()
    sim.set_image("app:v2")
    sim.converge()
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    assert sim.services["app"] == sim.hash_of(1)
    assert sim.phase == "Degraded"
    assert sim.status is not None and sim.status["message"].startswith(
        "RolloutAborted: Rollout aborted update to revision 2"
    )
    assert sim.replicas() == {1: 4, 2: 0}, "basic canary (no trafficRouting): canary scaled down at once"
    assert sim.step == 0


def test_abort_with_traffic_routing_waits_abort_scale_down_delay() -> None:
    sim = deployed(trafficRouting={"nginx": {"stableIngress": "app"}}, abortScaleDownDelaySeconds=10)
    sim.set_image("app:v2")
    sim.converge()
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    assert sim.weight == 0 and sim.replicas() == {1: 4, 2: 1}
    assert sim.last is not None and sim.last.requeue_after == pytest.approx(10)
    sim.advance(10)
    sim.reconcile()
    assert sim.replicas() == {1: 4, 2: 0}


def test_retry_restarts_from_first_step() -> None:
    sim = deployed()
    sim.set_image("app:v2")
    sim.converge()
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.converge()
    sim.status = patches.retry(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.phase == "Paused" and sim.step == 1 and sim.weight == 20


def test_manual_pause_halts_steps() -> None:
    sim = deployed()
    sim.set_image("app:v2")
    sim.manifest["spec"]["paused"] = True
    sim.converge()
    assert sim.step == 0 and sim.phase == "Paused"
    assert sim.status is not None and sim.status["message"] == "manually paused"


ANALYSIS_STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"analysis": {"templates": [{"templateName": "rate"}]}},
    {"setWeight": 75},
]


@pytest.mark.parametrize(
    ("verdict", "expected_phase", "expected_weight", "expected_step"),
    [
        pytest.param("Successful", "Healthy", 0, 3, id="passes-then-promoted"),
        pytest.param("Failed", "Degraded", 0, 0, id="failed-aborts"),
        pytest.param("Error", "Degraded", 0, 0, id="error-aborts"),
        pytest.param("Inconclusive", "Paused", 25, 1, id="inconclusive-pauses"),
    ],
)
def test_step_analysis_verdicts(verdict: str, expected_phase: str, expected_weight: int, expected_step: int) -> None:
    sim = deployed(ANALYSIS_STEPS)
    sim.set_image("app:v2")
    sim.converge()
    run = sim.current_run()
    assert run.name == f"app-{sim.hash_of(2)}-2-1" and run.kind == "Step" and run.step_index == 1
    sim.finish_run(verdict, f'Metric "rate" assessed {verdict}')
    sim.converge()
    assert (sim.phase, sim.weight, sim.step) == (expected_phase, expected_weight, expected_step)
    if verdict == "Inconclusive":
        assert sim.pause_reasons() == ["InconclusiveAnalysisRun"]
    if verdict == "Failed":
        assert sim.status is not None
        assert "Step-based analysis phase failed" in sim.status["message"]


def test_abort_by_analysis_shifts_traffic_in_the_same_reconcile() -> None:
    sim = deployed(ANALYSIS_STEPS)
    sim.set_image("app:v2")
    sim.converge()
    assert sim.weight == 25
    sim.finish_run("Failed")
    sim.reconcile()
    assert sim.weight == 0 and sim.services["app"] == sim.hash_of(1)


def test_retry_after_failed_analysis_creates_a_new_run() -> None:
    sim = deployed(ANALYSIS_STEPS)
    sim.set_image("app:v2")
    sim.converge()
    first = sim.finish_run("Failed")
    sim.converge()
    sim.status = patches.retry(sim.rollout().to_json()).obj["status"]
    sim.converge()
    second = sim.current_run()
    assert second.name == f"{first}.1"


def test_promote_on_inconclusive_moves_to_next_step() -> None:
    sim = deployed(ANALYSIS_STEPS)
    sim.set_image("app:v2")
    sim.converge()
    sim.finish_run("Inconclusive")
    sim.converge()
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.phase == "Healthy" and sim.weight == 0


def test_background_analysis_failure_aborts() -> None:
    sim = deployed([{"setWeight": 20}, {"pause": {}}], analysis={"templates": [{"templateName": "rate"}]})
    sim.set_image("app:v2")
    sim.converge()
    run = sim.current_run()
    assert run.kind == "Background" and run.name == f"app-{sim.hash_of(2)}-2"
    sim.finish_run("Failed", "boom")
    sim.converge()
    assert sim.phase == "Degraded"
    assert sim.status is not None and "Background analysis phase failed" in sim.status["message"]


def test_new_update_supersedes_one_in_progress() -> None:
    sim = deployed()
    sim.set_image("app:v2")
    sim.converge()
    sim.set_image("app:v3")
    sim.converge()
    assert sim.replicas() == {1: 4, 2: 0, 3: 1}
    assert sim.step == 1 and sim.weight == 20
    assert sim.services["app-canary"] == sim.hash_of(3)


def test_rollback_to_stable_while_updating_is_fast_tracked() -> None:
    sim = deployed()
    sim.set_image("app:v2")
    sim.converge()
    sim.set_image("app:v1")
    sim.converge()
    assert sim.phase == "Healthy" and sim.weight == 0
    assert sim.replicas() == {1: 4, 2: 0}
    assert sim.status is not None and sim.status["duration"]["completionStatus"] == "FastRolledBack"


def test_invalid_spec_is_degraded_without_actions() -> None:
    sim = Sim(canary_rollout(STEPS))
    sim.invalid = 'service "app" not found: apply it before the rollout runs'
    result = sim.reconcile()
    assert [a for a in result.actions] == []
    assert sim.phase == "Degraded"
    assert sim.status is not None and sim.status["message"].endswith("apply it before the rollout runs")


@pytest.mark.parametrize(
    ("window", "expected_step_after_undo", "expected_phase"),
    [
        pytest.param(None, 1, "Paused", id="outside-window-runs-steps"),
        pytest.param(2, 4, "Healthy", id="within-window-fast-tracked"),
    ],
)
def test_undo_to_an_older_revision(window: int | None, expected_step_after_undo: int, expected_phase: str) -> None:
    manifest = canary_rollout(STEPS)
    if window is not None:
        manifest["spec"]["rollbackWindow"] = {"revisions": window}
    sim = Sim(manifest)
    sim.converge()
    for image in ("app:v2", "app:v3"):
        sim.set_image(image)
        sim.converge()
        sim.status = patches.promote(sim.rollout().to_json(), full=True).obj["status"]
        sim.converge()
    assert sim.phase == "Healthy"
    v2 = sim.hash_of(2)
    sim.set_image("app:v2")  # what `undo` writes: revision 2's template
    sim.converge()
    assert sim.status is not None and sim.status["currentPodHash"] == v2
    assert sorted(sim.replicas()) == [1, 3, 4] and sim.hash_of(4) == v2, "revision 2 became revision 4"
    assert (sim.step, sim.phase) == (expected_step_after_undo, expected_phase)


@pytest.mark.parametrize(
    ("implicit_router", "expected"),
    [
        pytest.param(True, {1: 4, 2: 2}, id="routed-stable-stays-full"),
        pytest.param(False, {1: 2, 2: 2}, id="basic-canary-approximates-weight-by-pods"),
    ],
)
def test_replica_counts_at_first_step(implicit_router: bool, expected: dict[int, int]) -> None:
    sim = Sim(canary_rollout([{"setWeight": 50}, {"pause": {}}]), implicit_router=implicit_router)
    sim.converge()
    sim.set_image("app:v2")
    sim.converge()
    assert sim.step == 1
    assert sim.replicas() == expected


def test_scale_down_delay_revision_limit() -> None:
    sim = deployed([], trafficRouting={"nginx": {"stableIngress": "app"}}, scaleDownDelayRevisionLimit=1)
    for image in ("app:v2", "app:v3"):
        sim.set_image(image)
        sim.converge()
    assert sim.replicas() == {1: 0, 2: 4, 3: 4}, "only one old revision lingers"
