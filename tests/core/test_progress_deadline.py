"""Progress deadline: Degraded after progressDeadlineSeconds without progress, except while waiting is expected."""

from __future__ import annotations

from typing import Any

import pytest

from rollouts.ops import patches
from tests.core.sim import Sim, canary_rollout


def updating(steps: list[dict[str, Any]], **spec: Any) -> Sim:
    manifest = canary_rollout(steps)
    manifest["spec"].update(spec)
    sim = Sim(manifest)
    sim.converge()
    sim.set_image("app:v2")
    sim.reconcile()
    sim.reconcile()  # the new ReplicaSet is observed: from here on, nothing moves until pods are ready
    return sim


def progressing_reason(sim: Sim) -> str:
    assert sim.status is not None
    return str(next(c["reason"] for c in sim.status["conditions"] if c["type"] == "Progressing"))


@pytest.mark.parametrize(
    ("wait", "expected_phase", "expected_reason"),
    [
        pytest.param(599, "Progressing", "ReplicaSetUpdated", id="before-deadline"),
        pytest.param(601, "Degraded", "ProgressDeadlineExceeded", id="after-deadline"),
    ],
)
def test_stuck_canary_exceeds_deadline(wait: int, expected_phase: str, expected_reason: str) -> None:
    sim = updating([{"setWeight": 50}, {"pause": {}}])
    sim.advance(wait)
    sim.reconcile()
    assert (sim.phase, progressing_reason(sim)) == (expected_phase, expected_reason)
    assert sim.status is not None and not sim.status.get("abort")


def test_deadline_requeues_at_the_deadline() -> None:
    sim = updating([{"setWeight": 50}], progressDeadlineSeconds=120)
    sim.advance(20)
    result = sim.reconcile()
    assert result.requeue_after == pytest.approx(100)


def test_progress_deadline_abort_aborts_the_update() -> None:
    sim = updating([{"setWeight": 50}, {"pause": {}}], progressDeadlineAbort=True, progressDeadlineSeconds=60)
    sim.advance(61)
    sim.reconcile()
    sim.reconcile()
    assert sim.phase == "Degraded" and sim.weight == 0
    assert sim.status is not None and sim.status["abort"] is True
    assert "has timed out progressing" in sim.status["message"]


def test_progress_resets_the_clock() -> None:
    sim = updating([{"setWeight": 50}, {"setWeight": 75}, {"pause": {}}], progressDeadlineSeconds=100)
    sim.advance(90)
    sim.settle()
    sim.reconcile()
    sim.advance(90)
    sim.reconcile()
    assert sim.phase == "Progressing" and progressing_reason(sim) == "ReplicaSetUpdated"


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([{"setWeight": 50}, {"pause": {}}], id="indefinite-pause"),
        pytest.param([{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "t"}]}}], id="analysis-step"),
    ],
)
def test_waiting_at_pause_or_analysis_is_not_counted(steps: list[dict[str, Any]]) -> None:
    sim = updating(steps, progressDeadlineSeconds=60)
    sim.converge()
    assert sim.step == 1
    sim.advance(3600)
    sim.reconcile()
    assert sim.phase in ("Paused", "Progressing")
    assert progressing_reason(sim) != "ProgressDeadlineExceeded"


def test_manual_pause_is_not_counted() -> None:
    sim = updating([{"setWeight": 50}], progressDeadlineSeconds=60, paused=True)
    sim.advance(3600)
    sim.reconcile()
    assert sim.phase == "Paused"


def _resume(sim: Sim) -> None:
    """spec.paused set mid-step (pods not ready) for an hour, then cleared."""
    sim.manifest["spec"]["paused"] = True
    sim.reconcile()
    sim.advance(3600)
    sim.reconcile()
    sim.manifest["spec"]["paused"] = False
    sim.reconcile()


@pytest.mark.parametrize(
    ("wait", "expected_phase", "expected_reason"),
    [
        pytest.param(59, "Progressing", "RolloutResumed", id="deadline-counts-from-the-resume"),
        pytest.param(61, "Degraded", "ProgressDeadlineExceeded", id="no-progress-after-the-resume"),
    ],
)
def test_deadline_after_resume(wait: int, expected_phase: str, expected_reason: str) -> None:
    """Argo's RolloutResumed reason restarts the clock: an update paused for longer than the
    deadline is not Degraded when resumed, only after a deadline without progress."""
    sim = updating([{"setWeight": 50}, {"pause": {}}], progressDeadlineSeconds=60)
    _resume(sim)
    assert (sim.phase, progressing_reason(sim)) == ("Progressing", "RolloutResumed")
    sim.advance(wait)
    sim.reconcile()
    assert (sim.phase, progressing_reason(sim)) == (expected_phase, expected_reason)


def test_retry_after_a_long_abort_is_not_degraded() -> None:
    """Aborted for an hour, then retried: RolloutRetry, the clock restarted (no instant Degraded)."""
    sim = updating([{"setWeight": 50}, {"pause": {}}], progressDeadlineSeconds=60)
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.converge()
    sim.advance(3600)
    sim.converge()
    sim.status = patches.retry(sim.rollout().to_json()).obj["status"]
    sim.reconcile()
    assert (sim.phase, progressing_reason(sim)) == ("Progressing", "RolloutRetry")
    sim.advance(59)
    sim.reconcile()  # the canary scaled up again: progress
    assert (sim.phase, progressing_reason(sim)) == ("Progressing", "ReplicaSetUpdated")
