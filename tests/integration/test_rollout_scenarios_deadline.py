"""End-to-end: an update whose pods never become ready exceeds progressDeadlineSeconds.

After Argo's TestCanaryProgressDeadlineExceededWithPause and
TestBlueGreenExceedProgressDeadlineAbort: the new version's readiness probe asks a path the
demo app answers 404, so its pod runs but never becomes ready. Without progressDeadlineAbort
the rollout turns Degraded (Progressing=False, ProgressDeadlineExceeded) and stays as it is,
still reconciled: a fixed version then rolls out normally. With progressDeadlineAbort the
update is aborted as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ControllerProcess, answers, free_port
from tests.integration.scenario_kit import (
    CANARY_SERVICES,
    NGINX,
    available,
    condition,
    deploy,
    desired,
    never_ready,
    proxy_weight,
    rollout_doc,
    status_weights,
    update,
    url,
)
from tests.integration.test_rollout_scenarios import healthy, paused_at, wait_until

pytestmark = pytest.mark.integration

STEPS = [{"setWeight": 50}, {"pause": {}}]


def strategy(**fields: Any) -> dict[str, Any]:
    return {"canary": {**CANARY_SERVICES, "trafficRouting": NGINX, "steps": STEPS, **fields}}


def degraded(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Degraded"


def test_progress_deadline_exceeded_leaves_the_update_in_place(controller: ControllerProcess, tmp_path: Path) -> None:
    services = {"web": free_port(), "web-canary": free_port()}
    deploy(controller, tmp_path, services, rollout_doc(strategy(), progressDeadlineSeconds=3))
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]

    update(controller, tmp_path, rollout_doc(strategy(), container=never_ready("demo:v2"), progressDeadlineSeconds=3))
    status = controller.wait_for("web", degraded, timeout=30)["status"]
    progressing = condition(status, "Progressing")
    v2 = status["currentPodHash"]
    rs_name = f"web-{v2}"
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert progressing["message"] == f'ReplicaSet "{rs_name}" has timed out progressing.'
    assert status["message"] == f'ProgressDeadlineExceeded: ReplicaSet "{rs_name}" has timed out progressing.'
    assert not status.get("abort"), "without progressDeadlineAbort the update is not aborted"
    assert status["stableRS"] == v1 and status["currentStepIndex"] == 0
    assert desired(controller) == {1: 2, 2: 1} and available(controller) == {1: 2, 2: 0}
    assert proxy_weight(controller) == (0, v2), "no traffic to a canary with no ready pod"
    assert status_weights(status) == (0, 100)
    assert answers(url(services["web"]), 10) == {"v1": 10}
    assert condition(status, "Completed")["status"] == "False"
    assert condition(status, "Healthy")["status"] == "False"
    assert condition(status, "Available")["status"] == "True"

    # Still reconciled: a fixed version replaces the stuck one and proceeds as usual.
    update(controller, tmp_path, rollout_doc(strategy(), image="demo:v4", progressDeadlineSeconds=3))
    status = controller.wait_for("web", paused_at(1))["status"]
    assert condition(status, "Progressing")["reason"] == "RolloutPaused"
    v4 = status["currentPodHash"]
    wait_until("the stuck canary to be scaled down", lambda: desired(controller) == {1: 2, 2: 0, 3: 1})
    controller.cli("promote", "web")
    status = controller.wait_for("web", healthy)["status"]
    assert status["stableRS"] == v4
    assert condition(status, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert answers(url(services["web"]), 10) == {"v4": 10}


def test_progress_deadline_abort_aborts_the_update(controller: ControllerProcess, tmp_path: Path) -> None:
    services = {"web": free_port(), "web-canary": free_port()}
    spec: dict[str, Any] = {"progressDeadlineSeconds": 3, "progressDeadlineAbort": True}
    deploy(controller, tmp_path, services, rollout_doc(strategy(abortScaleDownDelaySeconds=1), **spec))
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]

    stuck = rollout_doc(strategy(abortScaleDownDelaySeconds=1), container=never_ready("demo:v2"), **spec)
    update(controller, tmp_path, stuck)
    # The deadline is exceeded in one reconcile (which aborts), the abort is carried out in the next.
    aborted = "RolloutAborted"
    status = controller.wait_for(
        "web", lambda s: degraded(s) and bool(s.get("abort")) and condition(s, "Progressing")["reason"] == aborted
    )["status"]
    v2 = status["currentPodHash"]
    timed_out = f'ReplicaSet "web-{v2}" has timed out progressing.'
    assert status["message"] == f"RolloutAborted: Rollout aborted update to revision 2: {timed_out}"
    progressing = condition(status, "Progressing")
    assert progressing["status"] == "False"
    assert progressing["message"] == f"Rollout aborted update to revision 2: {timed_out}"
    assert status["duration"]["completionStatus"] == "Aborted"
    assert status["stableRS"] == v1 and status["currentStepIndex"] == 0
    assert status_weights(status) == (0, 100)
    wait_until("the aborted canary to be scaled down", lambda: desired(controller) == {1: 2, 2: 0})
    assert answers(url(services["web"]), 10) == {"v1": 10}
