"""Each operation's patch of intent, as `kubectl argo rollouts` writes it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rollouts.ops import patches

STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]


def ro(status: dict[str, Any] | None = None, *, paused: bool = False, blue_green: bool = False) -> dict[str, Any]:
    strategy: dict[str, Any] = {"blueGreen": {"activeService": "a"}} if blue_green else {"canary": {"steps": STEPS}}
    body: dict[str, Any] = {
        "metadata": {"name": "app"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:v1"}]}}, "strategy": strategy},
    }
    if paused:
        body["spec"]["paused"] = True
    if status is not None:
        body["status"] = status
    return body


PAUSE = [{"reason": "CanaryPauseStep", "startTime": "2026-11-26T00:00:00Z"}]
INCONCLUSIVE = [{"reason": "InconclusiveAnalysisRun", "startTime": "2026-11-26T00:00:00Z"}]


@pytest.mark.parametrize(
    ("before", "paused", "expected_status", "expected_spec_paused"),
    [
        pytest.param(
            {"currentStepIndex": 1, "pauseConditions": PAUSE, "controllerPause": True},
            False,
            {"currentStepIndex": 1, "controllerPause": True},
            None,
            id="clears-pause-condition",
        ),
        pytest.param(
            {"currentStepIndex": 2, "pauseConditions": INCONCLUSIVE, "controllerPause": True},
            False,
            {"currentStepIndex": 3, "controllerPause": False},
            None,
            id="inconclusive-skips-step",
        ),
        pytest.param({"currentStepIndex": 0}, False, {"currentStepIndex": 1}, None, id="skips-current-step"),
        pytest.param(
            {"currentStepIndex": 1, "pauseConditions": PAUSE},
            True,
            {"currentStepIndex": 1},
            False,
            id="unpauses-spec-and-clears-conditions",
        ),
    ],
)
def test_promote(
    before: dict[str, Any], paused: bool, expected_status: dict[str, Any], expected_spec_paused: bool | None
) -> None:
    patch = patches.promote(ro(before, paused=paused))
    assert patch.obj["status"] == expected_status
    assert patch.obj["spec"].get("paused") == expected_spec_paused


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(ro({"currentStepIndex": 3}), "no step left to skip", id="canary-done"),
        pytest.param(ro({}, blue_green=True), "is not paused", id="blue-green-not-paused"),
    ],
)
def test_promote_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(patches.OperationError, match=message):
        patches.promote(body)


def test_promote_full() -> None:
    patch = patches.promote(ro({"currentPodHash": "b", "stableRS": "a", "pauseConditions": PAUSE}), full=True)
    assert patch.obj["status"]["promoteFull"] is True and "pauseConditions" not in patch.obj["status"]
    with pytest.raises(patches.OperationError, match="already fully promoted"):
        patches.promote(ro({"currentPodHash": "a", "stableRS": "a"}), full=True)


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        pytest.param(patches.abort, {"abort": True}, id="abort"),
        pytest.param(patches.pause, None, id="pause"),
        pytest.param(patches.resume, None, id="resume"),
    ],
)
def test_simple_operations(operation: Any, expected: dict[str, Any] | None) -> None:
    patch = operation(ro({}, paused=operation is patches.resume))
    if expected is not None:
        assert patch.status and patch.obj["status"] == expected
    else:
        assert patch.spec and patch.obj["spec"]["paused"] is (operation is patches.pause)


def test_retry_only_when_aborted() -> None:
    assert patches.retry(ro({"abort": True})).obj["status"]["abort"] is False
    with pytest.raises(patches.OperationError, match="not aborted"):
        patches.retry(ro({}))


def test_restart_sets_restart_at() -> None:
    at = datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC)
    assert patches.restart(ro(), at).obj["spec"]["restartAt"] == "2026-11-26T01:02:03Z"


def test_set_image() -> None:
    patch = patches.set_image(ro(), "app", "app:v2")
    assert patch.obj["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v2"
    with pytest.raises(patches.OperationError, match='no container "web" \\(containers: app\\)'):
        patches.set_image(ro(), "web", "x")


def rs(revision: int, pod_hash: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"app-{pod_hash}",
            "annotations": {"rollout.argoproj.io/revision": str(revision)},
            "labels": {"rollouts-pod-template-hash": pod_hash},
        },
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "app", "rollouts-pod-template-hash": pod_hash}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            }
        },
    }


@pytest.mark.parametrize(
    ("to_revision", "expected_image"),
    [pytest.param(0, "app:v2", id="previous"), pytest.param(1, "app:v1", id="to-revision-1")],
)
def test_undo_copies_template_without_hash_label(to_revision: int, expected_image: str) -> None:
    sets = [rs(1, "h1", "app:v1"), rs(2, "h2", "app:v2"), rs(3, "h3", "app:v3")]
    patch = patches.undo(ro({"currentPodHash": "h3"}), sets, to_revision)
    template = patch.obj["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == expected_image
    assert template["metadata"]["labels"] == {"app": "app"}


def test_undo_refused() -> None:
    with pytest.raises(patches.OperationError, match="no revision 7 \\(revisions: 1\\)"):
        patches.undo(ro(), [rs(1, "h1", "app:v1")], 7)
    with pytest.raises(patches.OperationError, match="no previous revision"):
        patches.undo(ro({"currentPodHash": "h1"}), [rs(1, "h1", "app:v1")])


def test_resume_clears_the_user_pause_and_keeps_pause_steps() -> None:
    patch = patches.resume(ro({"currentStepIndex": 1, "pauseConditions": PAUSE}, paused=True))
    assert patch.spec and not patch.status
    assert patch.obj["spec"]["paused"] is False
    assert patch.obj["status"]["pauseConditions"] == PAUSE  # a pause step still needs promote


def test_resume_refused_when_not_paused_by_a_user() -> None:
    with pytest.raises(patches.OperationError, match=r"nothing to resume .*use promote"):
        patches.resume(ro({"currentStepIndex": 1, "pauseConditions": PAUSE}))
