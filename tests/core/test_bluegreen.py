"""Blue/green: preview, pause for promotion, auto-promotion, cutover, analysis, abort."""

from __future__ import annotations

from typing import Any

import pytest

from rollouts.ops import patches
from tests.core.sim import Sim, blue_green_rollout


def deployed(**bg: Any) -> Sim:
    sim = Sim(blue_green_rollout(**bg))
    sim.converge()
    assert sim.phase == "Healthy"
    assert sim.services == {"app": sim.hash_of(1), "app-preview": sim.hash_of(1)}
    return sim


def test_manual_promotion_switches_active_after_promote() -> None:
    sim = deployed(autoPromotionEnabled=False)
    sim.set_image("app:v2")
    sim.converge()
    assert sim.pause_reasons() == ["BlueGreenPause"] and sim.phase == "Paused"
    assert sim.services == {"app": sim.hash_of(1), "app-preview": sim.hash_of(2)}
    assert sim.replicas() == {1: 3, 2: 3}
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.services["app"] == sim.hash_of(2)
    assert sim.phase == "Healthy"
    assert sim.status is not None and sim.status["stableRS"] == sim.hash_of(2)


def test_old_active_scaled_down_after_scale_down_delay() -> None:
    sim = deployed(autoPromotionEnabled=False, scaleDownDelaySeconds=60)
    sim.set_image("app:v2")
    sim.converge()
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.replicas() == {1: 3, 2: 3}
    sim.advance(60)
    sim.converge()
    assert sim.replicas() == {1: 0, 2: 3}


@pytest.mark.parametrize(
    ("seconds", "wait", "switched"),
    [
        pytest.param(0, 0, True, id="auto-promotion-immediate"),
        pytest.param(30, 29, False, id="auto-promotion-seconds-not-yet"),
        pytest.param(30, 30, True, id="auto-promotion-seconds-elapsed"),
    ],
)
def test_auto_promotion(seconds: int, wait: int, switched: bool) -> None:
    sim = deployed(autoPromotionSeconds=seconds) if seconds else deployed()
    sim.set_image("app:v2")
    sim.converge()
    sim.advance(wait)
    sim.converge()
    assert (sim.services["app"] == sim.hash_of(2)) is switched


def test_preview_replica_count_then_full_scale_before_switch() -> None:
    sim = deployed(autoPromotionEnabled=False, previewReplicaCount=1)
    sim.set_image("app:v2")
    sim.converge()
    assert sim.replicas() == {1: 3, 2: 1}
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    assert sim.services["app"] == sim.hash_of(1), "active switches only once the new ReplicaSet is full"
    sim.converge()
    assert sim.replicas()[2] == 3 and sim.services["app"] == sim.hash_of(2)


@pytest.mark.parametrize(
    ("verdict", "expected_active_revision", "expected_phase"),
    [
        pytest.param("Successful", 2, "Healthy", id="pre-promotion-passes"),
        pytest.param("Failed", 1, "Degraded", id="pre-promotion-fails"),
    ],
)
def test_pre_promotion_analysis(verdict: str, expected_active_revision: int, expected_phase: str) -> None:
    sim = deployed(prePromotionAnalysis={"templates": [{"templateName": "smoke"}]})
    sim.set_image("app:v2")
    sim.converge()
    run = sim.current_run()
    assert run.name.endswith("-pre") and run.kind == "PrePromotion"
    assert sim.services["app"] == sim.hash_of(1)
    sim.finish_run(verdict)
    sim.converge()
    assert sim.services["app"] == sim.hash_of(expected_active_revision)
    assert sim.phase == expected_phase


def test_post_promotion_failure_switches_back() -> None:
    sim = deployed(postPromotionAnalysis={"templates": [{"templateName": "smoke"}]})
    sim.set_image("app:v2")
    sim.converge()
    assert sim.services["app"] == sim.hash_of(2)
    assert sim.status is not None and sim.status["stableRS"] == sim.hash_of(1)
    assert sim.phase == "Progressing"
    sim.finish_run("Failed")
    sim.converge()
    assert sim.services["app"] == sim.hash_of(1)
    assert sim.phase == "Degraded"


def test_abort_keeps_active_on_stable_and_scales_preview_down_after_delay() -> None:
    sim = deployed(autoPromotionEnabled=False, abortScaleDownDelaySeconds=5)
    sim.set_image("app:v2")
    sim.converge()
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    assert sim.services == {"app": sim.hash_of(1), "app-preview": sim.hash_of(1)}
    assert sim.phase == "Degraded" and sim.replicas()[2] == 3
    sim.advance(5)
    sim.reconcile()
    assert sim.replicas()[2] == 0
