"""spec.restartAt: a rolling recreate of the pods, planned purely (Sim pods carry creation times).

Each case drives `Sim` with a fixed clock: pods are created when a ReplicaSet settles, at the
sim's `now`, and `RestartPod` removes a pod until the next `settle` replaces it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from rollouts.core import plan as p
from rollouts.core.restart import restart_pending
from rollouts.core.timeutil import to_rfc3339
from rollouts.ops import patches
from tests.core.sim import Sim, blue_green_rollout, canary_rollout

STEPS: list[dict[str, Any]] = [{"setWeight": 25}, {"pause": {}}]


def deployed(manifest: dict[str, Any]) -> Sim:
    sim = Sim(manifest)
    sim.converge()
    assert sim.phase == "Healthy"
    return sim


def request_restart(sim: Sim, in_seconds: float = 0) -> str:
    """What `rollouts restart` writes: spec.restartAt (whole seconds), after the pods were created."""
    sim.advance(60)
    sim.manifest = patches.restart(sim.rollout().to_json(), sim.now + timedelta(seconds=in_seconds)).obj
    sim.manifest.pop("status", None)
    return str(sim.manifest["spec"]["restartAt"])


def restarts(result: p.Plan) -> list[str]:
    return [a.name for a in result.actions if isinstance(a, p.RestartPod)]


def run_restart(sim: Sim, limit: int = 40) -> list[list[str]]:
    """Reconcile (pods replaced between reconciles) until status.restartedAt is set: the batches."""
    batches: list[list[str]] = []
    for _ in range(limit):
        batch = restarts(sim.reconcile())
        if batch:
            batches.append(batch)
        assert sim.status is not None
        if sim.status.get("restartedAt"):
            return batches
        sim.advance(1)
        sim.settle()
    raise AssertionError("the restart did not finish")


@pytest.mark.parametrize(
    ("manifest", "batch_size", "batches"),
    [
        pytest.param(canary_rollout(STEPS, replicas=4), 1, 4, id="canary-default-25%-of-4-is-1"),
        pytest.param(canary_rollout(STEPS, replicas=4, maxUnavailable=2), 2, 2, id="canary-maxUnavailable-2"),
        pytest.param(canary_rollout(STEPS, replicas=4, maxUnavailable="50%"), 2, 2, id="canary-maxUnavailable-50%"),
        pytest.param(
            canary_rollout(STEPS, replicas=3, maxUnavailable=0, maxSurge=1), 1, 3, id="maxUnavailable-0-is-1-at-a-time"
        ),
        pytest.param(blue_green_rollout(replicas=3), 1, 3, id="blue-green-default-rounds-to-0-so-1"),
        pytest.param(blue_green_rollout(replicas=4, maxUnavailable=4), 4, 1, id="blue-green-all-at-once"),
        pytest.param(canary_rollout(STEPS, replicas=1), 1, 1, id="single-replica"),
    ],
)
def test_restart_replaces_every_old_pod_within_max_unavailable(
    manifest: dict[str, Any], batch_size: int, batches: int
) -> None:
    sim = deployed(manifest)
    old = {pod.name for pod in sim.pods(1)}
    at = request_restart(sim)
    first = restarts(sim.reconcile())
    assert sim.phase == "Progressing" and sim.status is not None
    assert sim.status["message"] == "pods are restarting"
    sim.advance(1)
    sim.settle()
    done = [first, *run_restart(sim)]
    assert [len(b) for b in done] == [batch_size] * batches
    assert {name for b in done for name in b} == old, "each old pod restarted exactly once"
    assert sim.status is not None and sim.status["restartedAt"] == at
    assert all(pod.created >= sim.now - timedelta(seconds=batches + 1) for pod in sim.pods(1))
    sim.converge()
    assert sim.phase == "Healthy" and sim.replicas() == {1: manifest["spec"]["replicas"]}


def test_restart_waits_until_restart_at() -> None:
    sim = deployed(canary_rollout(STEPS))
    at = request_restart(sim, in_seconds=30)
    result = sim.reconcile()
    assert restarts(result) == [] and result.requeue_after == pytest.approx(30)
    assert sim.phase == "Healthy", "a restart in the future is not pending yet"
    sim.advance(30)
    assert restarts(sim.reconcile()) != []
    assert sim.status is not None and sim.status.get("restartedAt") is None
    run_restart(sim)
    assert sim.status is not None and sim.status["restartedAt"] == at


def test_unavailable_pods_use_up_the_budget() -> None:
    sim = deployed(canary_rollout(STEPS, replicas=4, maxUnavailable=2))
    request_restart(sim)
    name = next(iter(sim.rs))
    rs = sim.rs[name]
    sim.rs[name] = p.ReplicaSetView(**{**rs.__dict__, "available": rs.available - 1})
    assert len(restarts(sim.reconcile())) == 1, "one pod is already down: one more may go"
    assert restarts(sim.reconcile()) == [], "two down now (the restarted pod is not replaced yet)"


def test_order_is_stable_then_new_then_oldest() -> None:
    sim = deployed(canary_rollout(STEPS, replicas=4, maxUnavailable=1))
    sim.set_image("app:v2")
    sim.converge()
    assert sim.replicas() == {1: 4, 2: 1} and sim.pause_reasons() == ["CanaryPauseStep"]
    stable = [pod.name for pod in sim.pods(1)]
    canary = [pod.name for pod in sim.pods(2)]
    request_restart(sim)
    flat = [name for batch in run_restart(sim) for name in batch]
    assert flat == stable + canary


def test_pods_created_after_restart_at_are_kept() -> None:
    sim = deployed(canary_rollout(STEPS))
    sim.manifest["spec"]["restartAt"] = to_rfc3339(sim.now - timedelta(hours=1))
    result = sim.reconcile()
    assert restarts(result) == []
    assert sim.status is not None and sim.status["restartedAt"] == sim.manifest["spec"]["restartAt"]
    assert "RestartCompleted" in sim.events


def test_done_restart_is_not_repeated() -> None:
    sim = deployed(canary_rollout(STEPS))
    request_restart(sim)
    run_restart(sim)
    sim.advance(60)
    sim.settle()
    assert restarts(sim.converge()) == []
    assert sim.phase == "Healthy"


def test_template_change_cancels_the_restart() -> None:
    sim = deployed(canary_rollout(STEPS, replicas=4))
    at = request_restart(sim)
    assert len(restarts(sim.reconcile())) == 1
    sim.settle()
    sim.set_image("app:v2")
    result = sim.reconcile()
    assert restarts(result) == []
    assert sim.status is not None and sim.status["restartedAt"] == at
    assert "RestartCancelled" in sim.events


def test_replica_sets_scaled_down_in_the_same_plan_are_not_restarted() -> None:
    sim = deployed(canary_rollout(STEPS, replicas=2))
    sim.set_image("app:v2")
    sim.converge()
    sim.status = patches.promote(sim.rollout().to_json(), full=True).obj["status"]
    sim.converge()
    assert sim.replicas() == {1: 2, 2: 2}, "the old stable lingers for its scale-down delay (30s)"
    new_pods = {pod.name for pod in sim.pods(2)}
    request_restart(sim)  # 60s later: the old stable is scaled down by the same plan
    flat = [name for batch in run_restart(sim) for name in batch]
    assert set(flat) == new_pods and sim.replicas() == {1: 0, 2: 2}


@pytest.mark.parametrize(
    ("restart_at", "restarted_at", "expected"),
    [
        pytest.param(None, None, False, id="no-restart"),
        pytest.param("2026-11-26T12:00:00Z", None, True, id="requested"),
        pytest.param("2026-11-26T12:00:00Z", "2026-11-26T12:00:00Z", False, id="done"),
        pytest.param("2026-11-26T13:00:00Z", "2026-11-26T12:00:00Z", True, id="requested-again"),
    ],
)
def test_platforms_list_pods_only_while_a_restart_is_pending(
    restart_at: str | None, restarted_at: str | None, expected: bool
) -> None:
    sim = Sim(canary_rollout(STEPS))
    if restart_at is not None:
        sim.manifest["spec"]["restartAt"] = restart_at
    sim.status = {"restartedAt": restarted_at} if restarted_at else None
    assert restart_pending(sim.rollout()) is expected
