"""How each update ends, as the plan reports it (`Plan.outcomes`) for the controller's
`rollout_duration_seconds` metric (Argo's DurationSuite outcomes).

Every outcome but `Superseded` is also in status.duration; a superseded update's duration is
replaced by the new update's, so the plan (and a `RolloutSuperseded` event saying how long it
ran) is the only place it shows. Driven by `Sim` with a fixed clock: each scenario names the
outcomes reported from the moment the update under test starts, as (revision, completion
status, seconds it ran).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rollouts.ops import patches
from tests.core.sim import Sim, blue_green_rollout, canary_rollout

HALF: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
Outcome = tuple[int, str, float | None]


def canary() -> Sim:
    sim = Sim(canary_rollout(HALF))
    sim.converge()
    return sim


def update(sim: Sim, image: str, run_for: float = 0) -> None:
    sim.set_image(image)
    sim.converge()
    sim.advance(run_for)


def operate(sim: Sim, operation: Callable[..., Any], **kwargs: Any) -> None:
    sim.status = operation(sim.rollout().to_json(), **kwargs).obj["status"]
    sim.converge()


def promoted(sim: Sim) -> None:
    update(sim, "app:v2", 50)
    operate(sim, patches.promote)


def fast_promoted(sim: Sim) -> None:
    update(sim, "app:v2", 50)
    operate(sim, patches.promote, full=True)


def aborted(sim: Sim) -> None:
    update(sim, "app:v2", 50)
    operate(sim, patches.abort)


def superseded(sim: Sim) -> None:
    update(sim, "app:v2", 100)
    update(sim, "app:v3")


def superseded_then_promoted(sim: Sim) -> None:
    superseded(sim)
    sim.advance(20)
    operate(sim, patches.promote)


def aborted_then_new_update(sim: Sim) -> None:
    aborted(sim)
    sim.advance(10)
    update(sim, "app:v3")


def to_v3_stable(sim: Sim) -> None:
    for image in ("app:v2", "app:v3"):
        update(sim, image)
        operate(sim, patches.promote, full=True)
    sim.outcomes.clear()  # the scenario starts here


def rolled_back(sim: Sim) -> None:
    to_v3_stable(sim)
    update(sim, "app:v1", 30)  # revision 1 behind the stable: a rollback that runs its steps
    operate(sim, patches.promote)


def rollback_superseded(sim: Sim) -> None:
    to_v3_stable(sim)
    update(sim, "app:v1", 30)
    update(sim, "app:v4")


def fast_rolled_back(sim: Sim) -> None:
    update(sim, "app:v2", 40)
    update(sim, "app:v1")  # back to the stable revision


def blue_green() -> Sim:
    sim = Sim(blue_green_rollout(autoPromotionEnabled=False))
    sim.converge()
    return sim


@pytest.mark.parametrize(
    ("start", "scenario", "expected", "in_status"),
    [
        pytest.param(canary, promoted, [(2, "Promoted", 50)], "Promoted", id="promoted"),
        pytest.param(canary, fast_promoted, [(2, "FastPromoted", 50)], "FastPromoted", id="fast-promoted"),
        pytest.param(canary, aborted, [(2, "Aborted", 50)], "Aborted", id="aborted"),
        pytest.param(canary, superseded, [(2, "Superseded", 100)], None, id="superseded"),
        pytest.param(
            canary,
            superseded_then_promoted,
            [(2, "Superseded", 100), (3, "Promoted", 20)],
            "Promoted",
            id="superseded-then-next-promoted",
        ),
        pytest.param(
            canary, aborted_then_new_update, [(2, "Aborted", 50)], None, id="aborted-update-is-not-superseded"
        ),
        # A rollback reports the revision it returned to (an undo gives it the next revision).
        pytest.param(canary, rolled_back, [(4, "RolledBack", 30)], "RolledBack", id="rolled-back"),
        pytest.param(canary, rollback_superseded, [(4, "Superseded", 30)], None, id="rollback-superseded"),
        pytest.param(
            canary, fast_rolled_back, [(1, "FastRolledBack", 40)], "FastRolledBack", id="fast-rolled-back-to-stable"
        ),
        pytest.param(blue_green, superseded, [(2, "Superseded", 100)], None, id="blue-green-superseded"),
        pytest.param(blue_green, aborted, [(2, "Aborted", 50)], "Aborted", id="blue-green-aborted"),
    ],
)
def test_outcomes(
    start: Callable[[], Sim], scenario: Callable[[Sim], None], expected: list[Outcome], in_status: str | None
) -> None:
    sim = start()
    sim.outcomes.clear()
    scenario(sim)
    assert [(o.revision, o.completion_status, o.seconds) for o in sim.outcomes] == expected
    assert sim.status is not None
    assert sim.status["duration"].get("completionStatus") == in_status, "a superseded outcome is never in status"


def test_superseded_update_is_reported_by_an_event_not_in_status() -> None:
    sim = canary()
    update(sim, "app:v2", 100)
    started_v3 = sim.now
    update(sim, "app:v3")
    superseded_events = [e for e in sim.recorded if e.reason == "RolloutSuperseded"]
    assert [(e.type, e.message) for e in superseded_events] == [
        ("Normal", "Update to revision 2 superseded by revision 3 after 1m40s")
    ]
    assert sim.status is not None
    assert sim.status["duration"] == {"rolloutStartedAt": started_v3.strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_each_outcome_is_reported_once() -> None:
    """An aborted update is unwound on every reconcile; its outcome is reported the first time only."""
    sim = canary()
    aborted(sim)
    for _ in range(3):
        sim.advance(60)
        sim.reconcile()
    assert [o.completion_status for o in sim.outcomes] == ["Aborted"]
