"""spec.replicas changed in the middle of an update (issue 3, Operations: "scaling mid-update").

Argo treats a replica change as a scaling event: the ReplicaSets are resized by the replica
arithmetic for the step the rollout is at, and the update stays where it was (same step, same
pause, same weight, same clock). Each case pauses an update, changes spec.replicas, lets the
pods come up and checks the desired pods by revision, the step and the pause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rollouts.ops import patches
from tests.core.sim import Sim, blue_green_rollout, canary_rollout

HALF: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]


def canary(*, routed: bool = True, replicas: int = 4, **spec: Any) -> Sim:
    sim = Sim(canary_rollout(HALF, replicas=replicas, **spec), implicit_router=routed)
    sim.converge()
    sim.set_image("app:v2")
    sim.converge()
    return sim


def blue_green(*, replicas: int = 3, **spec: Any) -> Sim:
    sim = Sim(blue_green_rollout(replicas=replicas, autoPromotionEnabled=False, **spec))
    sim.converge()
    sim.set_image("app:v2")
    sim.converge()
    return sim


def scale(sim: Sim, replicas: int) -> None:
    sim.manifest["spec"]["replicas"] = replicas
    sim.manifest["metadata"]["generation"] += 1
    sim.converge()


@pytest.mark.parametrize(
    ("start", "before", "replicas", "after", "pause"),
    [
        # Traffic-routed canary at 50 %: canary ceil(replicas * 50 %), the stable stays whole.
        pytest.param(canary, {1: 4, 2: 2}, 6, {1: 6, 2: 3}, "CanaryPauseStep", id="routed-canary-scale-up"),
        pytest.param(canary, {1: 4, 2: 2}, 3, {1: 3, 2: 2}, "CanaryPauseStep", id="routed-canary-scale-down-ceil"),
        pytest.param(canary, {1: 4, 2: 2}, 1, {1: 1, 2: 1}, "CanaryPauseStep", id="routed-canary-to-one"),
        # Basic canary: the weight approximated by pod counts (ties to the larger canary).
        pytest.param(
            lambda: canary(routed=False), {1: 2, 2: 2}, 6, {1: 3, 2: 3}, "CanaryPauseStep", id="basic-canary-scale-up"
        ),
        # 5 replicas at 50 %: 3 + 3 (within maxSurge 2) approximates 50 % best.
        pytest.param(
            lambda: canary(routed=False), {1: 2, 2: 2}, 5, {1: 3, 2: 3}, "CanaryPauseStep", id="basic-canary-odd"
        ),
        pytest.param(
            lambda: canary(minPodsPerReplicaSet=2), {1: 4, 2: 2}, 2, {1: 2, 2: 2}, "CanaryPauseStep", id="min-pods"
        ),
        # Blue/green waiting for promotion: preview and active both follow spec.replicas.
        pytest.param(blue_green, {1: 3, 2: 3}, 5, {1: 5, 2: 5}, "BlueGreenPause", id="blue-green-preview-scale-up"),
        pytest.param(blue_green, {1: 3, 2: 3}, 2, {1: 2, 2: 2}, "BlueGreenPause", id="blue-green-preview-scale-down"),
        pytest.param(
            lambda: blue_green(previewReplicaCount=1),
            {1: 3, 2: 1},
            5,
            {1: 5, 2: 1},
            "BlueGreenPause",
            id="blue-green-preview-replica-count-kept",
        ),
    ],
)
def test_scaling_mid_update(
    start: Callable[[], Sim], before: dict[int, int], replicas: int, after: dict[int, int], pause: str
) -> None:
    sim = start()
    assert sim.replicas() == before and sim.pause_reasons() == [pause]
    assert sim.status is not None
    step, started = sim.step, sim.status["duration"]
    weight = sim.weight
    sim.outcomes.clear()

    scale(sim, replicas)
    assert sim.replicas() == after
    assert (sim.phase, sim.pause_reasons(), sim.step) == ("Paused", [pause], step), "the update stays where it was"
    assert sim.weight == weight
    assert sim.status["duration"] == started and sim.outcomes == [], "scaling is not a new update"
    assert sim.status["availableReplicas"] == sum(after.values())


@pytest.mark.parametrize("replicas", [pytest.param(6, id="up"), pytest.param(2, id="down")])
def test_scaling_then_promote_completes_at_the_new_size(replicas: int) -> None:
    sim = canary()
    scale(sim, replicas)
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.phase == "Healthy" and sim.replicas()[2] == replicas
