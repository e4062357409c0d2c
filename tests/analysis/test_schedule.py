"""Scheduling of measurements and the next reconcile time, with an injected clock.

Covers: initialDelay from status.startedAt, interval after the last finishedAt, the fixed
10 s retry after an Error (with or without interval), count reached, completed metrics,
terminate (explicit and via a failed metric, not via a dry-run one), in-flight measurements
with resumeAt, templated (substituted) metrics, and ttlStrategy expiry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollouts.analysis.schedule import (
    REASON_ERROR_RETRY,
    REASON_FIRST,
    REASON_INTERVAL,
    REASON_RESUME,
    due_metric_reasons,
    due_metrics,
    next_reconcile,
    ttl_expired,
    ttl_expires_at,
)
from rollouts.core.timeutil import to_rfc3339
from rollouts.model.analysis import (
    AnalysisRun,
    AnalysisRunSpec,
    AnalysisRunStatus,
    Measurement,
    Metric,
    MetricResult,
    TTLStrategy,
)
from rollouts.model.meta import ObjectMeta

T0 = datetime(2026, 11, 26, 5, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def metric(name: str = "m", **fields: Any) -> Metric:
    return Metric(name=name, provider={"web": {"url": "http://example.test"}}, **fields)


def finished(phase: str, at_seconds: float) -> Measurement:
    return Measurement(phase=phase, started_at=to_rfc3339(at(at_seconds)), finished_at=to_rfc3339(at(at_seconds)))


def result(name: str = "m", *measurements: Measurement, phase: str = "Running", **fields: Any) -> MetricResult:
    return MetricResult(name=name, phase=phase, measurements=list(measurements), **fields)


def make_run(
    metrics: list[Metric],
    results: list[MetricResult] | None = None,
    *,
    started: float | None = 0,
    terminate: bool | None = None,
    phase: str | None = "Running",
) -> AnalysisRun:
    return AnalysisRun(
        metadata=ObjectMeta(name="run", namespace="default"),
        spec=AnalysisRunSpec(metrics=metrics, terminate=terminate),
        status=AnalysisRunStatus(
            phase=phase,
            started_at=to_rfc3339(at(started)) if started is not None else None,
            metric_results=results,
        ),
    )


IN_FLIGHT_LATER = Measurement(phase="Running", started_at=to_rfc3339(at(0)), resume_at=to_rfc3339(at(30)))


@pytest.mark.parametrize(
    ("run", "now", "expected"),
    [
        pytest.param(make_run([metric()]), 0, [REASON_FIRST], id="first-measurement-now"),
        pytest.param(make_run([metric(initial_delay="1m")]), 59, [], id="initial-delay-not-elapsed"),
        pytest.param(make_run([metric(initial_delay="1m")]), 60, [REASON_FIRST], id="initial-delay-elapsed"),
        pytest.param(
            make_run([metric(initial_delay="1m")], started=30), 60, [], id="initial-delay-counts-from-started-at"
        ),
        pytest.param(make_run([metric(initial_delay="1m")], started=None), 600, [], id="initial-delay-needs-start"),
        pytest.param(
            make_run([metric(interval="1m")], [result("m", finished("Successful", 10), count=1)]),
            69,
            [],
            id="interval-not-elapsed",
        ),
        pytest.param(
            make_run([metric(interval="1m")], [result("m", finished("Successful", 10), count=1)]),
            70,
            [REASON_INTERVAL],
            id="interval-elapsed",
        ),
        pytest.param(
            make_run([metric(interval="5m")], [result("m", finished("Error", 10), error=1, consecutive_error=1)]),
            20,
            [REASON_ERROR_RETRY],
            id="error-retry-10s-despite-interval",
        ),
        pytest.param(
            make_run([metric(interval="5m")], [result("m", finished("Error", 10), error=1, consecutive_error=1)]),
            19,
            [],
            id="error-retry-not-yet",
        ),
        pytest.param(
            make_run([metric()], [result("m", finished("Error", 10), error=1, consecutive_error=1)]),
            20,
            [REASON_ERROR_RETRY],
            id="error-retry-single-measurement",
        ),
        pytest.param(
            make_run([metric()], [result("m", finished("Successful", 10), count=1)]),
            999,
            [],
            id="single-measurement-done",
        ),
        pytest.param(
            make_run([metric(interval="10s", count=2)], [result("m", finished("Failed", 10), count=2)]),
            999,
            [],
            id="count-reached",
        ),
        pytest.param(
            make_run(
                [metric(interval="10s", count=2)],
                [result("m", finished("Successful", 10), phase="Successful", count=1)],
            ),
            999,
            [],
            id="metric-completed",
        ),
        pytest.param(
            make_run([metric(interval="10s")], [result("m", finished("Successful", 10), count=1)], terminate=True),
            999,
            [],
            id="terminate",
        ),
        pytest.param(make_run([metric()], terminate=True), 0, [], id="terminate-before-first"),
        pytest.param(
            make_run(
                [metric("a", interval="10s"), metric("b", interval="10s")],
                [
                    result("a", finished("Failed", 10), phase="Failed", count=1, failed=1),
                    result("b", finished("Successful", 10), count=1),
                ],
            ),
            999,
            [],
            id="terminating-after-failed-metric",
        ),
        pytest.param(
            make_run(
                [metric("a", interval="10s"), metric("b", interval="10s")],
                [
                    result("a", finished("Failed", 10), phase="Failed", count=1, failed=1, dry_run=True),
                    result("b", finished("Successful", 10), count=1),
                ],
            ),
            999,
            [REASON_INTERVAL],
            id="dry-run-failure-does-not-stop",
        ),
        pytest.param(
            make_run([metric(interval="10s")], [result("m", IN_FLIGHT_LATER)]), 29, [], id="in-flight-before-resume"
        ),
        pytest.param(
            make_run([metric(interval="10s")], [result("m", IN_FLIGHT_LATER)]),
            30,
            [REASON_RESUME],
            id="in-flight-resume",
        ),
        pytest.param(
            make_run([metric(interval="10s")], [result("m", IN_FLIGHT_LATER)], terminate=True),
            30,
            [REASON_RESUME],
            id="in-flight-resumed-to-terminate",
        ),
        pytest.param(
            make_run([metric(interval="soon")], [result("m", finished("Successful", 10), count=1)]),
            999,
            [],
            id="bad-interval-skipped",
        ),
        pytest.param(
            make_run(
                [metric("a"), metric("b", initial_delay="30s"), metric("c", interval="10s")],
                [result("c", finished("Successful", 0), count=1)],
            ),
            30,
            [REASON_FIRST, REASON_FIRST, REASON_INTERVAL],
            id="several-in-spec-order",
        ),
    ],
)
def test_due_metric_reasons(run: AnalysisRun, now: float, expected: list[str]) -> None:
    assert [d.reason for d in due_metric_reasons(run, at(now))] == expected


def test_unreadable_timestamps_do_not_stall() -> None:
    garbled = Measurement(phase="Successful", finished_at="not-a-time")
    run = make_run([metric(interval="1m")], [result("m", garbled, count=1)])
    assert [d.reason for d in due_metric_reasons(run, at(5))] == [REASON_INTERVAL]
    assert next_reconcile(run, at(5)) == at(5)
    in_flight = Measurement(phase="Running", resume_at="garbage")
    run = make_run([metric(interval="1m")], [result("m", in_flight)])
    assert [d.reason for d in due_metric_reasons(run, at(5))] == [REASON_RESUME]
    assert ttl_expires_at(ttl_run("Failed", TTLStrategy(seconds_after_completion=1), completed=None)) is None


def test_due_metrics_uses_substituted_metrics() -> None:
    templated = metric(interval="{{args.every}}")
    run = make_run([templated], [result("m", finished("Successful", 0), count=1)])
    assert due_metrics(run, at(30)) == []  # the template's interval does not parse: skipped
    resolved = metric(interval="30s")
    assert due_metrics(run, at(30), metrics=[resolved]) == [resolved]


@pytest.mark.parametrize(
    ("run", "now", "expected"),
    [
        pytest.param(make_run([metric()], phase="Successful"), 0, None, id="completed-run"),
        pytest.param(make_run([metric(initial_delay="90s")], started=10), 20, 100, id="initial-delay"),
        pytest.param(make_run([metric()]), 5, 5, id="not-yet-measured-now"),
        pytest.param(
            make_run([metric(interval="1m")], [result("m", finished("Successful", 10), count=1)]),
            11,
            70,
            id="interval",
        ),
        pytest.param(
            make_run([metric(interval="1m")], [result("m", finished("Error", 10), error=1)]),
            11,
            20,
            id="error-retry",
        ),
        pytest.param(
            make_run([metric()], [result("m", finished("Successful", 10), count=1)]), 11, None, id="count-reached"
        ),
        pytest.param(
            make_run(
                [metric("a", interval="1m"), metric("b", interval="20s")],
                [result("a", finished("Successful", 10), count=1), result("b", finished("Successful", 10), count=1)],
            ),
            11,
            30,
            id="earliest-of-metrics",
        ),
        pytest.param(
            make_run(
                [metric("a", interval="1m"), metric("b", interval="20s")],
                [
                    result("a", finished("Successful", 10), count=1),
                    result("b", finished("Successful", 10), phase="Successful", count=1),
                ],
            ),
            11,
            70,
            id="completed-metric-ignored",
        ),
        pytest.param(make_run([metric(interval="10s")], [result("m", IN_FLIGHT_LATER)]), 5, 30, id="resume-at"),
        pytest.param(
            make_run([metric(interval="10s")], [result("m", finished("Successful", 10), count=1)], terminate=True),
            11,
            None,
            id="terminating-schedules-nothing",
        ),
    ],
)
def test_next_reconcile(run: AnalysisRun, now: float, expected: float | None) -> None:
    assert next_reconcile(run, at(now)) == (at(expected) if expected is not None else None)


def ttl_run(phase: str | None, ttl: TTLStrategy | None, completed: float | None = 100) -> AnalysisRun:
    run = make_run([metric()], phase=phase)
    run.spec.ttl_strategy = ttl
    assert run.status is not None
    run.status.completed_at = to_rfc3339(at(completed)) if completed is not None else None
    return run


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        pytest.param(ttl_run("Running", TTLStrategy(seconds_after_completion=5)), None, id="not-completed"),
        pytest.param(ttl_run("Successful", None), None, id="no-ttl-strategy"),
        pytest.param(ttl_run("Successful", TTLStrategy(seconds_after_success=10)), 110, id="after-success"),
        pytest.param(
            ttl_run("Successful", TTLStrategy(seconds_after_failure=10, seconds_after_completion=50)),
            150,
            id="success-falls-back-to-completion",
        ),
        pytest.param(ttl_run("Failed", TTLStrategy(seconds_after_failure=20)), 120, id="after-failure"),
        pytest.param(
            ttl_run("Error", TTLStrategy(seconds_after_failure=20, seconds_after_completion=30)),
            130,
            id="error-uses-completion",
        ),
        pytest.param(ttl_run("Inconclusive", TTLStrategy(seconds_after_success=20)), None, id="nothing-applies"),
        pytest.param(ttl_run("Failed", TTLStrategy(seconds_after_completion=5), completed=None), None, id="no-time"),
    ],
)
def test_ttl_expires_at(run: AnalysisRun, expected: float | None) -> None:
    assert ttl_expires_at(run) == (at(expected) if expected is not None else None)


def test_ttl_expired() -> None:
    run = ttl_run("Successful", TTLStrategy(seconds_after_success=10))
    assert not ttl_expired(run, at(109))
    assert ttl_expired(run, at(110))
    assert not ttl_expired(ttl_run("Successful", None), at(10_000))
