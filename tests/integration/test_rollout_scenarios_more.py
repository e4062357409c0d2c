"""End-to-end: operations on an update in flight, after Argo's FunctionalSuite, RollbackSuite,
AnalysisSuite, CanarySuite and DurationSuite.

* promote --full after an abort goes straight to the new version, with no analysis
  (TestCanaryPromoteFull, third case);
* undo to a revision inside rollbackWindow is fast-tracked, outside it the steps replay
  (TestRollbackAnalysisWithinWindow / OutsideWindow, TestCanaryDuration_Rollback*Window);
* a failing post-promotion analysis aborts a blue/green update and switches the active
  Service back (TestBlueGreenPostPromotionFail);
* a new update supersedes one in progress (TestCanaryWithPausedRollout,
  TestCanaryDuration_SupersededRollout), and a template change mid-canary to a version that
  never becomes ready keeps every request on the stable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rollouts.core.timeutil import parse_rfc3339
from tests.integration.conftest import ControllerProcess, MetricServer, answers, free_port
from tests.integration.scenario_kit import (
    CANARY_SERVICES,
    NGINX,
    available,
    by_revision,
    condition,
    deploy,
    desired,
    never_ready,
    pod_hash,
    proxy_weight,
    rollout_doc,
    scale_down_deadline,
    selector_hash,
    update,
    url,
)
from tests.integration.test_rollout_scenarios import healthy, listed, paused_at, wait_until, web_template

pytestmark = pytest.mark.integration

PAUSED_AT_HALF = [{"setWeight": 50}, {"pause": {}}]


def ports(*names: str) -> dict[str, int]:
    return {name: free_port() for name in names}


def degraded(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Degraded"


# --- promote --full after abort ----------------------------------------------------------------


def test_promote_full_after_abort(controller: ControllerProcess, tmp_path: Path, metric_server: MetricServer) -> None:
    services = ports("web", "web-canary")
    steps = [*PAUSED_AT_HALF, {"analysis": {"templates": [{"templateName": "ok"}]}}, {"pause": {}}]
    background = {"templates": [{"templateName": "ok"}], "startingStep": 2}
    strategy = {"canary": {**CANARY_SERVICES, "steps": steps, "analysis": background}}
    deploy(controller, tmp_path, services, rollout_doc(strategy), web_template(metric_server.url))
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", paused_at(1))["status"]["currentPodHash"]
    controller.cli("abort", "web")
    controller.wait_for("web", degraded)
    assert answers(url(services["web"]), 10) == {"v1": 10}

    controller.cli("promote", "web", "--full")
    status = controller.wait_for("web", healthy)["status"]
    assert status["stableRS"] == v2 and status["currentStepIndex"] == len(steps)
    assert not status.get("abort") and not status.get("abortedAt") and not status.get("promoteFull")
    assert status["duration"]["completionStatus"] == "FastPromoted"
    assert condition(status, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert condition(status, "Completed")["status"] == "True"
    assert listed(controller, "AnalysisRun") == [], "a full promotion skips every analysis"
    assert answers(url(services["web"]), 10) == {"v2": 10}
    assert selector_hash(controller, "web") == v2 and selector_hash(controller, "web-canary") == v2


# --- undo and rollbackWindow -------------------------------------------------------------------


def windowed(services: dict[str, int]) -> dict[str, Any]:
    """Steps to replay; old stables go at once so a rollback has to bring pods back."""
    strategy = {
        "canary": {**CANARY_SERVICES, "trafficRouting": NGINX, "scaleDownDelaySeconds": 0, "steps": PAUSED_AT_HALF}
    }
    return rollout_doc(strategy, rollbackWindow={"revisions": 1})


def promote_to(controller: ControllerProcess, image: str) -> str:
    controller.cli("set", "image", "web", f"app={image}")
    current = controller.wait_for("web", paused_at(1))["status"]["currentPodHash"]
    controller.cli("promote", "web")
    controller.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == current)
    return str(current)


def test_undo_inside_the_rollback_window_is_fast_tracked(controller: ControllerProcess, tmp_path: Path) -> None:
    services = ports("web", "web-canary")
    deploy(controller, tmp_path, services, windowed(services))
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    v2 = promote_to(controller, "demo:v2")
    wait_until("revision 1 to be scaled down", lambda: desired(controller)[1] == 0)
    controller.cli("set", "image", "web", "app=demo:v4")
    v4 = controller.wait_for("web", paused_at(1))["status"]["currentPodHash"]

    # Revision 1 is one revision behind the stable (2): inside a window of 1.
    controller.cli("undo", "web", "--to-revision", "1")
    status = controller.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == v1, timeout=30)["status"]
    assert status["currentStepIndex"] == len(PAUSED_AT_HALF) and not status.get("pauseConditions"), "no steps run"
    assert status["duration"]["completionStatus"] == "FastRolledBack"
    sets = by_revision(controller)
    assert pod_hash(sets[4]) == v1, "the rolled-back template takes the next revision"
    wait_until("the canary to be scaled down", lambda: desired(controller) == {2: 0, 3: 0, 4: 2})
    assert {pod_hash(sets[2]), pod_hash(sets[3])} == {v2, v4}
    assert answers(url(services["web"]), 10) == {"v1": 10}
    assert proxy_weight(controller) == (0, v1)


def test_undo_outside_the_rollback_window_replays_the_steps(controller: ControllerProcess, tmp_path: Path) -> None:
    services = ports("web", "web-canary")
    deploy(controller, tmp_path, services, windowed(services))
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    promote_to(controller, "demo:v2")
    v4 = promote_to(controller, "demo:v4")
    started = parse_rfc3339(controller.rollout("web")["status"]["duration"]["rolloutStartedAt"])

    # Revision 1 is two revisions behind the stable (3): outside a window of 1.
    controller.cli("undo", "web", "--to-revision", "1")
    status = controller.wait_for("web", lambda s: paused_at(1)(s) and s.get("currentPodHash") == v1)["status"]
    assert status["stableRS"] == v4
    assert status["pauseConditions"][0]["reason"] == "CanaryPauseStep"
    resumed = parse_rfc3339(status["duration"]["rolloutStartedAt"])
    assert started is not None and resumed is not None and resumed >= started
    assert not status["duration"].get("finishedAt")
    wait_until("the canary at its step", lambda: desired(controller) == {2: 0, 3: 2, 4: 1})
    assert pod_hash(by_revision(controller)[4]) == v1
    assert answers(url(services["web"]), 20) == {"v4": 10, "v1": 10}

    controller.cli("promote", "web")
    status = controller.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == v1)["status"]
    assert status["duration"]["completionStatus"] == "RolledBack"
    assert answers(url(services["web"]), 10) == {"v1": 10}


# --- blue/green post-promotion analysis -------------------------------------------------------------


def test_blue_green_post_promotion_failure_switches_back(
    controller: ControllerProcess, tmp_path: Path, metric_server: MetricServer
) -> None:
    metric_server.ok = False
    services = ports("web", "web-preview")
    strategy = {
        "blueGreen": {
            "activeService": "web",
            "previewService": "web-preview",
            "postPromotionAnalysis": {"templates": [{"templateName": "ok"}]},
            "abortScaleDownDelaySeconds": 2,
        }
    }
    deploy(controller, tmp_path, services, rollout_doc(strategy), web_template(metric_server.url, count=2))
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    assert listed(controller, "AnalysisRun") == [], "no analysis on the initial deploy"

    controller.cli("set", "image", "web", "app=demo:v2")
    status = controller.wait_for("web", lambda s: degraded(s) and bool(s.get("abort")), timeout=30)["status"]
    v2 = status["currentPodHash"]
    assert status["stableRS"] == v1
    assert status["message"].startswith("RolloutAborted: Rollout aborted update to revision 2: ")
    assert "PostPromotion analysis phase failed" in status["message"]
    assert status["blueGreen"]["activeSelector"] == v1 and status["blueGreen"]["previewSelector"] == v1
    assert status["blueGreen"]["postPromotionAnalysisRunStatus"]["status"] == "Failed"
    assert status["duration"]["completionStatus"] == "Aborted"
    assert condition(status, "Progressing")["reason"] == "RolloutAborted"
    (run,) = listed(controller, "AnalysisRun")
    assert run["metadata"]["name"] == f"web-{v2}-2-post" and run["status"]["phase"] == "Failed"
    assert selector_hash(controller, "web") == v1, "the active Service is switched back"
    assert answers(url(services["web"]), 10) == {"v1": 10}
    assert desired(controller)[1] == 2 and available(controller)[1] == 2, "the old active kept its pods"

    wait_until("the preview to be scaled down", lambda: desired(controller) == {1: 2, 2: 0}, timeout=15)
    assert controller.rollout("web")["status"]["phase"] == "Degraded"


# --- superseding updates --------------------------------------------------------------------------


def test_new_update_supersedes_one_in_progress(controller: ControllerProcess, tmp_path: Path) -> None:
    services = ports("web", "web-canary")
    deploy(controller, tmp_path, services, rollout_doc({"canary": {**CANARY_SERVICES, "steps": PAUSED_AT_HALF}}))
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    controller.cli("set", "image", "web", "app=demo:v2")
    first = controller.wait_for("web", paused_at(1))["status"]
    assert desired(controller) == {1: 2, 2: 1}

    controller.cli("set", "image", "web", "app=demo:v4")
    status = controller.wait_for(
        "web", lambda s: paused_at(1)(s) and s.get("currentPodHash") != first["currentPodHash"]
    )["status"]
    v4 = status["currentPodHash"]
    assert status["stableRS"] == v1
    wait_until("the superseded canary to be scaled down", lambda: desired(controller) == {1: 2, 2: 0, 3: 1})
    assert proxy_weight(controller) == (50, v4)
    assert answers(url(services["web"]), 20) == {"v1": 10, "v4": 10}, "nothing reaches the superseded revision"
    # The superseded update's outcome is not kept in status (Argo only reports it as a metric):
    # the new update starts its own clock.
    started = parse_rfc3339(status["duration"]["rolloutStartedAt"])
    first_started = parse_rfc3339(first["duration"]["rolloutStartedAt"])
    assert started is not None and first_started is not None and started >= first_started
    assert not status["duration"].get("completionStatus") and not status["duration"].get("finishedAt")

    controller.cli("promote", "web")
    status = controller.wait_for("web", healthy)["status"]
    assert status["stableRS"] == v4 and status["duration"]["completionStatus"] == "Promoted"
    assert answers(url(services["web"]), 10) == {"v4": 10}


def test_template_change_mid_canary_keeps_traffic_on_ready_pods(controller: ControllerProcess, tmp_path: Path) -> None:
    services = ports("web", "web-canary")
    strategy = {"canary": {**CANARY_SERVICES, "steps": PAUSED_AT_HALF}}
    deploy(controller, tmp_path, services, rollout_doc(strategy))
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", paused_at(1))["status"]["currentPodHash"]
    assert proxy_weight(controller) == (50, v2)

    # The new template's pod never becomes ready: the update restarts at step 0 and no request
    # may go to it (Argo sends no weight to a canary without available pods).
    update(controller, tmp_path, rollout_doc(strategy, container=never_ready("demo:v4")))
    status = controller.wait_for("web", lambda s: s.get("currentPodHash") not in (None, v2))["status"]
    v4 = status["currentPodHash"]
    wait_until("the new canary's pod", lambda: desired(controller) == {1: 2, 2: 0, 3: 1})
    status = controller.rollout("web")["status"]
    assert status["phase"] == "Progressing" and status["currentStepIndex"] == 0
    assert condition(status, "Progressing")["reason"] == "ReplicaSetUpdated"
    assert proxy_weight(controller) == (0, v4)
    assert answers(url(services["web"]), 20) == {"v1": 20}
    assert scale_down_deadline(by_revision(controller)[2]) is None
