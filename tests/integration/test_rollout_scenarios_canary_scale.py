"""End-to-end: setCanaryScale sizes the canary apart from its traffic (Argo's TestCanarySetCanaryScale).

The same step list as Argo's test (timed pauses made indefinite, so the test promotes at
each one), on 4 replicas: at every pause the exact canary/stable pod counts, the weight the
proxy applies and the split of real requests are checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import ControllerProcess, answers, free_port
from tests.integration.scenario_kit import (
    CANARY_SERVICES,
    NGINX,
    available,
    by_revision,
    deploy,
    desired,
    pod_hash,
    proxy_weight,
    rollout_doc,
    scale_down_deadline,
    url,
)
from tests.integration.test_rollout_scenarios import healthy, paused_at

pytestmark = pytest.mark.integration

STEPS = [
    {"pause": {}},  # 0
    {"setCanaryScale": {"weight": 25}},  # 1
    {"pause": {}},  # 2
    {"setWeight": 50},  # 3
    {"pause": {}},  # 4
    {"setCanaryScale": {"replicas": 3}},  # 5
    {"pause": {}},  # 6
    {"setCanaryScale": {"matchTrafficWeight": True}},  # 7
    {"pause": {}},  # 8
]

# (pause step, canary pods, stable pods, canary weight, answers of 20 requests by version)
AT_EACH_PAUSE = [
    (0, 0, 4, 0, {"v1": 20}),
    (2, 1, 4, 0, {"v1": 20}),  # 25% of the replicas, no traffic yet
    (4, 1, 4, 50, {"v1": 10, "v2": 10}),  # setCanaryScale is sticky: half the traffic on one pod
    (6, 3, 4, 50, {"v1": 10, "v2": 10}),
    (8, 2, 4, 50, {"v1": 10, "v2": 10}),  # matchTrafficWeight: back to ceil(4 * 50%)
]


def test_set_canary_scale(controller: ControllerProcess, tmp_path: Path) -> None:
    services = {"web": free_port(), "web-canary": free_port()}
    strategy = {"canary": {**CANARY_SERVICES, "trafficRouting": NGINX, "steps": STEPS}}
    deploy(controller, tmp_path, services, rollout_doc(strategy, replicas=4))
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")

    for step, canary_pods, stable_pods, weight, split in AT_EACH_PAUSE:
        status = controller.wait_for("web", paused_at(step))["status"]
        v2 = status["currentPodHash"]
        assert desired(controller) == {1: stable_pods, 2: canary_pods}, f"at step {step}"
        assert available(controller) == {1: stable_pods, 2: canary_pods}, f"at step {step}"
        assert proxy_weight(controller) == (weight, v2), f"at step {step}"
        assert status["canary"]["weights"]["canary"]["weight"] == weight
        assert answers(url(services["web"]), 20) == split, f"at step {step}"
        assert answers(url(services["web-canary"]), 4) == ({"v2": 4} if canary_pods else {"503": 4})
        controller.cli("promote", "web")

    status = controller.wait_for("web", healthy)["status"]
    assert status["currentStepIndex"] == len(STEPS)
    sets = by_revision(controller)
    assert pod_hash(sets[2]) == status["stableRS"]
    assert desired(controller) == {1: 4, 2: 4}, "the old stable lingers for the default scaleDownDelaySeconds"
    assert scale_down_deadline(sets[1]) is not None
    assert answers(url(services["web"]), 20) == {"v2": 20}
