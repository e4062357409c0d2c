"""What probe results mean (`probes.ContainerHealth`): thresholds, counters, startup gating, kills.

Pure: each case feeds results at given clock times (an injected clock, no sleeping) and checks
the container's readiness, whether it started, the kill, the events and when each probe is due
next. A failing result at time t carries the message "down@t".
"""

from __future__ import annotations

from typing import Any

import pytest

from rollouts.platform.embedded.probes import ContainerHealth
from rollouts.platform.embedded.probespec import ContainerProbes, HTTPGet, Probe, ProbeKind

R, L, S = ProbeKind.READINESS, ProbeKind.LIVENESS, ProbeKind.STARTUP
START = 100.0  # when the container process started


def probe(
    *, delay: float = 0.0, period: float = 10.0, success: int = 1, failure: int = 3, poll: float | None = None
) -> Probe:
    return Probe(
        HTTPGet(path="/healthz"),
        initial_delay=delay,
        period=period,
        success_threshold=success,
        failure_threshold=failure,
        poll_until_success=poll,
    )


Step = tuple[float, ProbeKind, bool]  # (at, which probe, succeeded)

CASES = [
    pytest.param(
        ContainerProbes(readiness=probe(delay=5)),
        [],
        {"ready": False, "started": True, "message": "", "due": {R: 105.0}},
        id="readiness-starts-not-ready-first-probe-after-initial-delay",
    ),
    pytest.param(
        ContainerProbes(readiness=probe()),
        [(100, R, True)],
        {"ready": True, "changes": [True], "due": {R: 110.0}},
        id="readiness-one-success-makes-ready-next-probe-one-period-later",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(success=3)),
        [(100, R, True), (110, R, True)],
        {"ready": False, "changes": [False, False]},
        id="readiness-below-success-threshold-stays-not-ready",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(success=3)),
        [(100, R, True), (110, R, True), (120, R, True)],
        {"ready": True, "changes": [False, False, True]},
        id="readiness-success-threshold-reached",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(success=2)),
        [(100, R, True), (110, R, False), (120, R, True)],
        {"ready": False, "message": ""},
        id="readiness-successes-must-be-consecutive",
    ),
    pytest.param(
        ContainerProbes(readiness=probe()),
        [(100, R, False)],
        {"ready": False, "events": [], "message": "Readiness probe failed: down@100"},
        id="readiness-failing-before-ever-ready-shows-message-without-event",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(failure=3)),
        [(100, R, True), (110, R, False), (120, R, False)],
        {"ready": True, "events": [], "message": ""},
        id="readiness-below-failure-threshold-stays-ready",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(failure=3)),
        [(100, R, True), (110, R, False), (120, R, False), (130, R, False)],
        {
            "ready": False,
            "changes": [True, False, False, True],
            "events": ["Readiness probe failed: down@130"],
            "message": "Readiness probe failed: down@130",
            "kill": None,
            "due": {R: 140.0},
        },
        id="readiness-failure-threshold-makes-unready-with-one-event",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(failure=3)),
        [(100, R, True), (110, R, False), (120, R, False), (130, R, True), (140, R, False), (150, R, False)],
        {"ready": True, "events": []},
        id="readiness-a-success-resets-the-failure-count",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(failure=1)),
        [(100, R, True), (110, R, False), (120, R, False), (130, R, True)],
        {"ready": True, "events": ["Readiness probe failed: down@110"], "changes": [True, True, False, True]},
        id="readiness-event-only-on-the-transition",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(), liveness=probe(failure=3)),
        [(100, R, True), (100, L, False), (110, L, False)],
        {"ready": True, "kill": None, "events": []},
        id="liveness-below-failure-threshold-does-nothing",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(), liveness=probe(failure=3)),
        [(100, R, True), (100, L, False), (110, L, False), (120, L, False)],
        {
            "ready": False,
            "kill": "Liveness probe failed: down@120",
            "events": ["Liveness probe failed: down@120"],
            "message": "Liveness probe failed: down@120",
            "due": {R: None, L: None},
        },
        id="liveness-failure-threshold-kills-and-stops-probing",
    ),
    pytest.param(
        ContainerProbes(liveness=probe(failure=2)),
        [(100, L, False), (110, L, True), (120, L, False)],
        {"kill": None, "ready": True},
        id="liveness-a-success-resets-the-failure-count",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(), liveness=probe(failure=1)),
        [(100, L, False), (100, R, True), (110, R, True)],
        {"kill": "Liveness probe failed: down@100", "ready": False, "changes": [False, False, False]},
        id="results-after-a-kill-are-ignored",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(delay=5), liveness=probe(delay=30), startup=probe(period=2)),
        [],
        {"started": False, "ready": False, "due": {S: 100.0, R: None, L: None}},
        id="startup-gates-readiness-and-liveness",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(), liveness=probe(), startup=probe(period=2)),
        [(100, R, True), (100, L, False), (100, L, False), (100, L, False)],
        {"started": False, "ready": False, "kill": None, "changes": [False, False, False, False]},
        id="readiness-and-liveness-results-before-startup-are-ignored",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(delay=5), liveness=probe(delay=30), startup=probe(period=2)),
        [(100, S, False), (102, S, True)],
        {"started": True, "ready": False, "due": {S: None, R: 105.0, L: 130.0}, "message": ""},
        id="startup-success-starts-the-others-after-their-initial-delay",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(delay=5), startup=probe(period=2, failure=10)),
        [(100, S, False), (102, S, False), (104, S, False), (106, S, True)],
        {"started": True, "due": {R: 106.0}},
        id="startup-success-after-initial-delay-probes-readiness-at-once",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(), startup=probe(period=2, failure=5)),
        [(100, S, False), (102, S, False)],
        {"started": False, "kill": None, "message": "Startup probe failed: down@102", "events": []},
        id="startup-failing-below-threshold-shows-message",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(), startup=probe(period=2, failure=3)),
        [(100, S, False), (102, S, False), (104, S, False)],
        {
            "started": False,
            "kill": "Startup probe failed: down@104",
            "events": ["Startup probe failed: down@104"],
            "due": {S: None, R: None},
        },
        id="startup-failure-threshold-kills",
    ),
    pytest.param(
        ContainerProbes(startup=probe(period=2)),
        [(100, S, True)],
        {"started": True, "ready": True, "changes": [True], "due": {S: None}},
        id="startup-only-ready-once-started",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(), startup=probe(period=2, failure=1)),
        [(100, S, True), (101, S, False)],
        {"started": True, "kill": None},
        id="startup-stops-after-its-success",
    ),
    pytest.param(
        ContainerProbes(),
        [],
        {"started": True, "ready": True, "message": ""},
        id="no-probes-ready-at-once",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(period=1, failure=1, poll=0.1)),
        [(100, R, False), (100.1, R, False)],
        {"ready": False, "due": {R: 100.2}},
        id="poll-until-success-while-never-succeeded",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(period=1, failure=1, poll=0.1)),
        [(100, R, False), (100.1, R, True), (101.1, R, False)],
        {"ready": False, "due": {R: 102.1}},
        id="poll-until-success-then-period",
    ),
]


@pytest.mark.parametrize(("probes", "steps", "expected"), CASES)
def test_probe_logic(probes: ContainerProbes, steps: list[Step], expected: dict[str, Any]) -> None:
    health = ContainerHealth(probes, started_at=START)
    changes: list[bool] = []
    events: list[str] = []
    kill: str | None = None
    for at, kind, ok in steps:
        verdict = health.record(kind, ok, f"down@{at:g}", at=at)
        changes.append(verdict.ready_changed)
        if verdict.event is not None:
            events.append(verdict.event)
        if verdict.kill is not None:
            assert kill is None, "killed twice"
            kill = verdict.kill
    got: dict[str, Any] = {
        "ready": health.ready,
        "started": health.started,
        "message": health.message,
        "changes": changes,
        "events": events,
        "kill": kill,
        "due": {kind: health.next_due(kind) for kind in expected.get("due", {})},
    }
    for key, want in expected.items():
        if key == "due":
            assert got["due"] == pytest.approx(want), key
        else:
            assert got[key] == want, key


ADOPTION_CASES = [
    pytest.param(
        ContainerProbes(readiness=probe(delay=30), startup=probe()),
        None,
        {"started": False, "ready": False, "due": {S: 100.0, R: None}},
        id="adopted-skips-initial-delays",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(delay=30, success=3), liveness=probe(delay=30), startup=probe()),
        True,
        {"started": True, "ready": True, "due": {S: None, R: 110.0, L: 100.0}},
        id="adopted-answering-is-ready-and-started-at-once",
    ),
    pytest.param(
        ContainerProbes(readiness=probe(period=1, failure=1, poll=0.1)),
        False,
        {"started": True, "ready": False, "message": "Readiness probe failed: gone", "due": {R: 100.1}},
        id="adopted-not-answering-is-not-ready",
    ),
]


@pytest.mark.parametrize(("probes", "answered", "expected"), ADOPTION_CASES)
def test_adopted_process(probes: ContainerProbes, answered: bool | None, expected: dict[str, Any]) -> None:
    health = ContainerHealth(probes, started_at=START, adopted=True)
    if answered is not None:
        health.adopted_probe(answered, "gone", at=START)
    assert health.started == expected["started"]
    assert health.ready == expected["ready"]
    assert health.message == expected.get("message", "")
    assert {kind: health.next_due(kind) for kind in expected["due"]} == pytest.approx(expected["due"])
