"""End-to-end: when old, aborted and shrinking ReplicaSets are scaled down (Argo's CanarySuite).

On the embedded platform the proxy routes by weight, so these canaries are traffic-routed
(the spec names the nginx router, as Argo requires for these fields):

* scaleDownDelaySeconds keeps the replaced stable up, marked with `scale-down-deadline`,
  until the deadline (TestCanaryScaleDownDelay), and scaleDownDelayRevisionLimit caps how
  many replaced stables linger;
* abortScaleDownDelaySeconds keeps an aborted canary up for N seconds while all traffic is
  back on stable (TestCanaryScaleDownOnAbort); 0 never scales it down
  (TestCanaryUnScaleDownOnAbort);
* dynamicStableScale shrinks the stable as the canary's weight grows and, on abort, drains
  the canary only as fast as the stable can take the traffic back
  (TestCanaryDynamicStableScale).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollouts.core.timeutil import parse_rfc3339
from tests.integration.conftest import ControllerProcess, answers, free_port
from tests.integration.scenario_kit import (
    CANARY_SERVICES,
    NGINX,
    available,
    by_revision,
    condition,
    deploy,
    desired,
    pod_hash,
    proxy_weight,
    rollout_doc,
    scale_down_deadline,
    status_weights,
    url,
)
from tests.integration.test_rollout_scenarios import healthy, paused_at, wait_until

pytestmark = pytest.mark.integration

PAUSED_AT_HALF = [{"setWeight": 50}, {"pause": {}}]


def canary(**fields: Any) -> dict[str, Any]:
    return {"canary": {**CANARY_SERVICES, "trafficRouting": NGINX, **fields}}


def ports() -> dict[str, int]:
    return {"web": free_port(), "web-canary": free_port()}


def test_scale_down_delay_keeps_the_old_stable_until_its_deadline(
    controller: ControllerProcess, tmp_path: Path
) -> None:
    services = ports()
    deploy(controller, tmp_path, services, rollout_doc(canary(scaleDownDelaySeconds=3, steps=PAUSED_AT_HALF)))
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", paused_at(1))
    assert desired(controller) == {1: 2, 2: 1}

    controller.cli("promote", "web")
    ro = controller.wait_for("web", healthy)
    wait_until(
        "the old stable's scale-down deadline", lambda: scale_down_deadline(by_revision(controller)[1]) is not None
    )
    old = by_revision(controller)[1]
    deadline = parse_rfc3339(scale_down_deadline(old))
    finished = parse_rfc3339(ro["status"]["duration"]["finishedAt"])
    assert deadline is not None and finished is not None
    assert deadline - finished == timedelta(seconds=3), "marked at promotion, scaleDownDelaySeconds ahead"
    assert old["spec"]["replicas"] == 2, "the old stable keeps its pods during the delay"
    assert ro["status"]["phase"] == "Healthy", "a pending scale-down does not hold the rollout back"
    assert proxy_weight(controller) == (0, pod_hash(by_revision(controller)[2]))
    assert answers(url(services["web"]), 10) == {"v2": 10}

    wait_until("the old stable to be scaled down", lambda: desired(controller)[1] == 0, timeout=15)
    assert datetime.now(UTC) >= deadline, "not scaled down before its deadline"
    assert scale_down_deadline(by_revision(controller)[1]) is None, "the annotation goes with the pods"
    assert desired(controller) == {1: 0, 2: 2}
    assert controller.rollout("web")["status"]["phase"] == "Healthy"


def test_scale_down_delay_revision_limit(controller: ControllerProcess, tmp_path: Path) -> None:
    """Argo's TestCanaryScaleDownDelay: with a limit of 1 only the last replaced stable lingers."""
    services = ports()
    deploy(controller, tmp_path, services, rollout_doc(canary(scaleDownDelayRevisionLimit=1, steps=[]), replicas=1))
    controller.wait_for("web", healthy)

    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", lambda s: healthy(s) and len(by_revision(controller)) == 2)
    wait_until("revision 1 marked", lambda: scale_down_deadline(by_revision(controller)[1]) is not None)
    assert desired(controller) == {1: 1, 2: 1}

    controller.cli("set", "image", "web", "app=demo:v3")
    v3 = controller.wait_for("web", lambda s: healthy(s) and len(by_revision(controller)) == 3)["status"]
    wait_until("revision 1 scaled down by the limit", lambda: desired(controller)[1] == 0)
    sets = by_revision(controller)
    assert desired(controller) == {1: 0, 2: 1, 3: 1}
    assert scale_down_deadline(sets[1]) is None
    assert scale_down_deadline(sets[2]) is not None
    assert pod_hash(sets[3]) == v3["stableRS"]

    # Back to v2 (its ReplicaSet still up): it becomes revision 4 and loses its deadline; v3 lingers.
    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == pod_hash(sets[2]))
    wait_until(
        "revision 3 marked",
        lambda: 3 in by_revision(controller) and bool(scale_down_deadline(by_revision(controller)[3])),
    )
    sets = by_revision(controller)
    assert desired(controller) == {1: 0, 3: 1, 4: 1}
    assert scale_down_deadline(sets[4]) is None
    assert answers(url(services["web"]), 10) == {"v2": 10}


def test_abort_scale_down_delay_keeps_the_canary_for_n_seconds(controller: ControllerProcess, tmp_path: Path) -> None:
    services = ports()
    deploy(controller, tmp_path, services, rollout_doc(canary(abortScaleDownDelaySeconds=3, steps=PAUSED_AT_HALF)))
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", paused_at(1))["status"]["currentPodHash"]
    assert proxy_weight(controller) == (50, v2)
    assert answers(url(services["web"]), 20) == {"v1": 10, "v2": 10}

    controller.cli("abort", "web")
    status = controller.wait_for("web", lambda s: s.get("phase") == "Degraded")["status"]
    aborted_at = parse_rfc3339(status["abortedAt"])
    assert aborted_at is not None
    assert status["abort"] is True and status["currentStepIndex"] == 0 and status["stableRS"] == v1
    assert status["message"] == "RolloutAborted: Rollout aborted update to revision 2"
    progressing = condition(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "RolloutAborted")
    assert status_weights(status) == (0, 100)
    assert proxy_weight(controller) == (0, v2)
    assert answers(url(services["web"]), 20) == {"v1": 20}, "all traffic back on stable at once"
    assert desired(controller) == {1: 2, 2: 1}, "the canary keeps its pod during abortScaleDownDelaySeconds"

    wait_until("the canary to be scaled down", lambda: desired(controller)[2] == 0, timeout=15)
    assert datetime.now(UTC) >= aborted_at + timedelta(seconds=3)
    assert desired(controller) == {1: 2, 2: 0}
    assert controller.rollout("web")["status"]["phase"] == "Degraded"


def test_abort_scale_down_delay_zero_never_scales_the_canary_down(
    controller: ControllerProcess, tmp_path: Path
) -> None:
    """Argo's TestCanaryUnScaleDownOnAbort: setCanaryScale's pod stays after an abort."""
    services = ports()
    steps = [{"setCanaryScale": {"replicas": 1}}, {"pause": {}}]
    deploy(
        controller,
        tmp_path,
        services,
        rollout_doc(canary(abortScaleDownDelaySeconds=0, scaleDownDelayRevisionLimit=1, steps=steps), replicas=4),
    )
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", paused_at(1))
    assert desired(controller) == {1: 4, 2: 1}
    assert proxy_weight(controller)[0] == 0, "setCanaryScale moves no traffic"

    controller.cli("abort", "web")
    controller.wait_for("web", lambda s: s.get("phase") == "Degraded")
    time.sleep(3)  # Argo's test waits 3 s too: nothing may scale the canary down meanwhile
    assert desired(controller) == {1: 4, 2: 1}
    assert available(controller) == {1: 4, 2: 1}
    assert scale_down_deadline(by_revision(controller)[2]) is None
    assert answers(url(services["web"]), 10) == {"v1": 10}


def test_dynamic_stable_scale(controller: ControllerProcess, tmp_path: Path) -> None:
    """Argo's TestCanaryDynamicStableScale, with exact counts at each pause and a traffic-safe abort."""
    services = ports()
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    deploy(controller, tmp_path, services, rollout_doc(canary(dynamicStableScale=True, steps=steps), replicas=4))
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", paused_at(1))["status"]["currentPodHash"]
    wait_until("the stable to shrink to 3", lambda: desired(controller) == {1: 3, 2: 1})
    assert proxy_weight(controller) == (25, v2)
    assert answers(url(services["web"]), 20) == {"v1": 15, "v2": 5}

    controller.cli("promote", "web")
    controller.wait_for("web", paused_at(3))
    wait_until("the stable to shrink to 1", lambda: desired(controller) == {1: 1, 2: 3})
    assert proxy_weight(controller) == (75, v2)
    assert answers(url(services["web"]), 20) == {"v1": 5, "v2": 15}

    controller.cli("abort", "web")
    # The canary's traffic returns only as fast as the stable's pods become available, and
    # the canary drains with it (no abortScaleDownDelaySeconds default with dynamicStableScale).
    deadline = time.monotonic() + 20
    seen: set[int] = set()
    while True:
        weight, _ = proxy_weight(controller)
        stable_available = available(controller)[1]
        seen.add(weight)
        assert weight >= 100 - 25 * stable_available, f"{100 - weight}% of traffic on {stable_available}/4 stable pods"
        if weight == 0 and desired(controller) == {1: 4, 2: 0}:
            break
        assert time.monotonic() < deadline, f"abort did not drain: {desired(controller)}, weight {weight}"
        time.sleep(0.05)
    status = controller.rollout("web")["status"]
    assert status["phase"] == "Degraded" and status_weights(status) == (0, 100)
    assert answers(url(services["web"]), 20) == {"v1": 20}
    assert seen >= {75, 0}


def test_traffic_never_reaches_a_canary_pod_that_is_gone(controller: ControllerProcess, tmp_path: Path) -> None:
    """Every request through the stable Service is answered while the canary scales down after abort."""
    services = ports()
    deploy(controller, tmp_path, services, rollout_doc(canary(abortScaleDownDelaySeconds=1, steps=PAUSED_AT_HALF)))
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", paused_at(1))
    controller.cli("abort", "web")
    codes: dict[int, int] = {}
    with httpx.Client(timeout=5.0) as client:
        end = time.monotonic() + 4
        while time.monotonic() < end:
            code = client.get(url(services["web"])).status_code
            codes[code] = codes.get(code, 0) + 1
    assert set(codes) == {200}, codes
    wait_until("the canary to be scaled down", lambda: desired(controller)[2] == 0)
