"""End-to-end: spec.replicas changed in the middle of an update (issue 3, "scaling mid-update").

Argo treats a replica change as a scaling event: the ReplicaSets are resized by the replica
arithmetic for the step the rollout is at and the update stays where it was. A controller
runs as its own process with real demo pods behind the embedded proxy:

* a canary paused at 50 % is scaled up, then down: canary ceil(replicas * 50 %), stable all
  replicas, still paused at the same step with the same weight and the same clock; then it is
  promoted at the new size;
* a blue/green update waiting for promotion is scaled up: preview and active both follow,
  the active Service stays on the old revision until the promotion;
* a new template supersedes the scaled canary: the superseded update shows in the controller's
  `rollout_duration_seconds{status="Superseded"}` and as a `RolloutSuperseded` event.

Every wait is bounded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ControllerProcess, answers, free_port
from tests.integration.scenario_kit import (
    CANARY_SERVICES,
    NGINX,
    admin_port,
    available,
    deploy,
    desired,
    proxy_weight,
    rollout_doc,
    selector_hash,
    update,
    url,
)
from tests.integration.test_rollout_scenarios import healthy, paused_at, wait_until

pytestmark = pytest.mark.integration

HALF = [{"setWeight": 50}, {"pause": {}}]
CANARY = {"canary": {**CANARY_SERVICES, "trafficRouting": NGINX, "steps": HALF}}
BLUE_GREEN = {"blueGreen": {"activeService": "web", "previewService": "web-preview", "autoPromotionEnabled": False}}


def scaled(controller: ControllerProcess, tmp_path: Path, strategy: dict[str, Any], replicas: int, image: str) -> None:
    """Re-apply the rollout with another spec.replicas (the template unchanged)."""
    update(controller, tmp_path, rollout_doc(strategy, replicas=replicas, image=image))


def settled(controller: ControllerProcess, expected: dict[int, int]) -> None:
    wait_until(
        f"pods by revision {expected}",
        lambda: desired(controller) == expected and available(controller) == expected,
        timeout=30,
    )


def metric(admin: int, metric_name: str, **labels: str) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=5.0).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_canary_paused_at_half_scaled_up_and_down(controller: ControllerProcess, tmp_path: Path) -> None:
    services = {"web": free_port(), "web-canary": free_port()}
    deploy(controller, tmp_path, services, rollout_doc(CANARY, replicas=2))
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    before = controller.wait_for("web", paused_at(1))["status"]
    v2 = before["currentPodHash"]
    settled(controller, {1: 2, 2: 1})

    scaled(controller, tmp_path, CANARY, 4, "demo:v2")
    settled(controller, {1: 4, 2: 2})
    status = controller.rollout("web")["status"]
    assert status["phase"] == "Paused" and status["currentStepIndex"] == 1
    assert [c["reason"] for c in status["pauseConditions"]] == ["CanaryPauseStep"]
    assert status["pauseConditions"] == before["pauseConditions"], "the same pause, not a new one"
    assert status["duration"] == before["duration"], "scaling is not a new update"
    assert proxy_weight(controller) == (50, v2)
    assert answers(url(services["web"]), 20) == {"v1": 10, "v2": 10}

    scaled(controller, tmp_path, CANARY, 3, "demo:v2")
    settled(controller, {1: 3, 2: 2})  # the canary: ceil(3 * 50 %)
    assert controller.rollout("web")["status"]["phase"] == "Paused"

    controller.cli("promote", "web")
    status = controller.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == v2)["status"]
    assert desired(controller)[2] == 3 and status["duration"]["completionStatus"] == "Promoted"
    assert answers(url(services["web"]), 10) == {"v2": 10}


def test_blue_green_preview_scaled_up(controller: ControllerProcess, tmp_path: Path) -> None:
    services = {"web": free_port(), "web-preview": free_port()}
    deploy(controller, tmp_path, services, rollout_doc(BLUE_GREEN, replicas=2))
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", lambda s: s.get("phase") == "Paused")["status"]["currentPodHash"]
    settled(controller, {1: 2, 2: 2})

    scaled(controller, tmp_path, BLUE_GREEN, 3, "demo:v2")
    settled(controller, {1: 3, 2: 3})
    status = controller.rollout("web")["status"]
    assert status["phase"] == "Paused"
    assert [c["reason"] for c in status["pauseConditions"]] == ["BlueGreenPause"]
    assert (selector_hash(controller, "web"), selector_hash(controller, "web-preview")) == (v1, v2)
    assert answers(url(services["web"]), 6) == {"v1": 6}
    assert answers(url(services["web-preview"]), 6) == {"v2": 6}

    controller.cli("promote", "web")
    controller.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == v2)
    assert desired(controller)[2] == 3
    assert answers(url(services["web"]), 6) == {"v2": 6}


def test_superseded_update_is_counted(controller: ControllerProcess, tmp_path: Path) -> None:
    services = {"web": free_port(), "web-canary": free_port()}
    deploy(controller, tmp_path, services, rollout_doc(CANARY, replicas=1))
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", paused_at(1))["status"]["currentPodHash"]
    admin = admin_port(controller)
    assert metric(admin, "rollout_duration_seconds_count", status="Superseded") is None

    controller.cli("set", "image", "web", "app=demo:v4")
    status = controller.wait_for("web", lambda s: paused_at(1)(s) and s.get("currentPodHash") != v2)["status"]
    assert "completionStatus" not in status["duration"], "a superseded outcome is not kept in status"
    wait_until(
        "the Superseded duration metric",
        lambda: metric(admin, "rollout_duration_seconds_count", namespace="default", status="Superseded") == 1,
    )
    info = metric(admin, "rollout_info", name="web", strategy="canary", traffic_router="Nginx", phase="Paused")
    assert info == 1
    shown = controller.cli("get", "rollout", "web")
    assert re.search(r"RolloutSuperseded\s+Update to revision 2 superseded by revision 3 after \d+s", shown), shown
