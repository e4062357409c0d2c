"""spec.analysis.successfulRunHistoryLimit / unsuccessfulRunHistoryLimit, through the pure planner."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from rollouts.core import plan as p
from rollouts.core.history import runs_to_delete
from rollouts.ops import patches
from tests.core.sim import T0, Sim, blue_green_rollout, canary_rollout


def run(name: str, phase: str, minute: int | None) -> p.RunView:
    created = None if minute is None else T0 + timedelta(minutes=minute)
    return p.RunView(name, "Step", "h", 0, phase, created=created)


CASES: list[Any] = [
    pytest.param([run("a", "Successful", 1)], set(), 5, 5, [], id="under-the-limit"),
    pytest.param(
        [run(f"s{i}", "Successful", i) for i in range(7)], set(), 5, 5, ["s0", "s1"], id="oldest-successful-go-first"
    ),
    pytest.param(
        [run("s3", "Successful", 3), run("s1", "Successful", 1), run("s2", "Successful", 2)],
        set(),
        1,
        5,
        ["s1", "s2"],
        id="ordered-by-creation-not-listing",
    ),
    pytest.param(
        [run("f1", "Failed", 1), run("e2", "Error", 2), run("i3", "Inconclusive", 3), run("s4", "Successful", 4)],
        set(),
        5,
        2,
        ["f1"],
        id="failed-error-inconclusive-counted-together",
    ),
    pytest.param(
        [run("s1", "Successful", 1), run("f2", "Failed", 2), run("s3", "Successful", 3), run("f4", "Failed", 4)],
        set(),
        1,
        1,
        ["s1", "f2"],
        id="counted-separately",
    ),
    pytest.param(
        [run("r1", "Running", 1), run("p2", "Pending", 2), run("s3", "Successful", 3)],
        set(),
        0,
        0,
        ["s3"],
        id="runs-in-flight-are-kept",
    ),
    pytest.param(
        [run("s1", "Successful", 1), run("s2", "Successful", 2)], {"s1"}, 0, 0, ["s2"], id="referenced-run-is-kept"
    ),
    pytest.param(
        [run("s1", "Successful", None), run("s2", "Successful", 2)],
        set(),
        1,
        1,
        ["s1"],
        id="unknown-creation-time-counts-as-oldest",
    ),
]


@pytest.mark.parametrize(("runs", "referenced", "ok", "bad", "expected"), CASES)
def test_runs_to_delete(runs: list[p.RunView], referenced: set[str], ok: int, bad: int, expected: list[str]) -> None:
    assert runs_to_delete(runs, referenced, ok, bad) == expected


STEPS: list[dict[str, Any]] = [{"analysis": {"templates": [{"templateName": "t"}]}}]


def updates_with_analysis(count: int, phase: str, **spec: Any) -> Sim:
    """`count` updates, each through a step analysis run that ends in `phase` (then promoted/retried)."""
    manifest = canary_rollout(STEPS)
    manifest["spec"].update(spec)
    sim = Sim(manifest)
    sim.converge()
    for version in range(2, count + 2):
        sim.set_image(f"app:v{version}")
        sim.converge()
        sim.finish_run(phase)
        sim.advance(60)
        sim.converge()
        if phase != "Successful":
            assert sim.phase == "Degraded"  # the next update supersedes the aborted one
    return sim


@pytest.mark.parametrize(
    ("phase", "spec", "kept"),
    [
        pytest.param("Successful", {}, 5, id="successful-default-5"),
        # The aborted update's own failed run is named in status: kept, and not counted.
        pytest.param("Failed", {}, 5 + 1, id="failed-default-5"),
        pytest.param("Successful", {"analysis": {"successfulRunHistoryLimit": 2}}, 2, id="successful-limit-2"),
        pytest.param("Error", {"analysis": {"unsuccessfulRunHistoryLimit": 1}}, 1 + 1, id="unsuccessful-limit-1"),
        pytest.param("Successful", {"analysis": {"unsuccessfulRunHistoryLimit": 0}}, 5, id="other-limit-irrelevant"),
    ],
)
def test_planner_deletes_runs_beyond_the_limit(phase: str, spec: dict[str, Any], kept: int) -> None:
    sim = updates_with_analysis(7, phase, **spec)
    assert len(sim.runs) == kept
    assert sim.deleted_runs, "the oldest runs were deleted"
    newest = sorted(sim.runs.values(), key=lambda r: r.created or T0)
    assert all(r.created is not None for r in newest)
    assert sorted(sim.deleted_runs) == sorted(set(sim.deleted_runs)), "each run deleted once"


def test_current_run_is_never_deleted() -> None:
    sim = updates_with_analysis(3, "Successful", analysis={"successfulRunHistoryLimit": 0})
    sim.set_image("app:v99")
    sim.converge()
    current = sim.current_run().name
    sim.finish_run("Inconclusive")
    sim.converge()
    assert sim.pause_reasons() == ["InconclusiveAnalysisRun"]
    assert current in sim.runs, "the run named in status stays while the rollout is paused on it"
    assert not [n for n, r in sim.runs.items() if r.phase == "Successful"]


# --- run bookkeeping the limits rely on: a failed run is history once its abort is over ---------


def test_retry_of_a_failed_first_step_analysis_starts_a_new_run() -> None:
    sim = Sim(canary_rollout(STEPS))
    sim.converge()
    sim.set_image("app:v2")
    sim.converge()
    first = sim.finish_run("Failed")
    sim.converge()
    assert sim.phase == "Degraded"
    sim.status = patches.retry(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.phase == "Progressing" and sim.current_run().name == f"{first}.1"
    assert sim.status is not None and "completionStatus" not in sim.status["duration"], "the retried update is open"
    sim.finish_run("Successful")
    sim.converge()
    assert sim.phase == "Healthy" and sim.status["duration"]["completionStatus"] == "Promoted"


def test_blue_green_retry_after_failed_pre_promotion_analysis() -> None:
    sim = Sim(blue_green_rollout(prePromotionAnalysis={"templates": [{"templateName": "smoke"}]}))
    sim.converge()
    sim.set_image("app:v2")
    sim.converge()
    first = sim.finish_run("Failed")
    sim.converge()
    assert sim.phase == "Degraded" and sim.services["app"] == sim.hash_of(1)
    sim.status = patches.retry(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.current_run().name == f"{first}.1"
    sim.finish_run("Successful")
    sim.converge()
    assert sim.phase == "Healthy" and sim.services["app"] == sim.hash_of(2)
