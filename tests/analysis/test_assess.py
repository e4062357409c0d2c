"""The AnalysisRun state machine (b.5): measurement phase, counters, metric phase, run phase.

Covers: condition outcomes and condition errors; counter updates per measurement phase and
history trimming; every metric limit and Argo's precedence quirks; the run's worst-phase
order, dry-run handling, terminate, and exact run messages; run summaries; effective count.
Conditions are evaluated by the product's condition language.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rollouts.analysis.assess import (
    effective_count,
    is_terminating,
    is_worse,
    measurement_phase,
    metric_phase,
    record_measurement,
    run_phase,
    run_summaries,
)
from rollouts.model.analysis import (
    AnalysisRun,
    AnalysisRunSpec,
    Measurement,
    Metric,
    MetricResult,
    RunSummary,
)
from rollouts.model.meta import ObjectMeta

PROVIDER = {"web": {"url": "http://example.test/metric"}}


def metric(name: str = "m", **fields: Any) -> Metric:
    return Metric(name=name, provider=PROVIDER, **fields)


def measurements(*phases: str) -> list[Measurement]:
    return [Measurement(phase=p, started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:00:01Z") for p in phases]


def result(
    name: str = "m", phase: str = "Running", done: tuple[str, ...] = ("Successful",), **fields: Any
) -> MetricResult:
    return MetricResult(name=name, phase=phase, measurements=measurements(*done) if done else None, **fields)


def run(*metrics: Metric, terminate: bool | None = None) -> AnalysisRun:
    return AnalysisRun(
        metadata=ObjectMeta(name="run", namespace="default"),
        spec=AnalysisRunSpec(metrics=list(metrics), terminate=terminate),
    )


# --- measurement phase ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("success", "failure", "value", "expected"),
    [
        pytest.param(None, None, 1.0, "Successful", id="neither-condition-successful"),
        pytest.param("result > 5", None, 10.0, "Successful", id="only-success-true"),
        pytest.param("result > 5", None, 1.0, "Failed", id="only-success-false"),
        pytest.param(None, "result > 5", 10.0, "Failed", id="only-failure-true"),
        pytest.param(None, "result > 5", 1.0, "Successful", id="only-failure-false"),
        pytest.param("result > 5", "result > 8", 10.0, "Failed", id="both-true-failed"),
        pytest.param("result > 5", "result > 8", 6.0, "Successful", id="success-only-true"),
        pytest.param("result > 5", "result < 0", 3.0, "Inconclusive", id="neither-true-inconclusive"),
        pytest.param("result[0] >= 0.95", None, [0.99], "Successful", id="vector-index"),
        pytest.param("", "", 1.0, "Successful", id="empty-strings-mean-unset"),
    ],
)
def test_measurement_phase(success: str | None, failure: str | None, value: object, expected: str) -> None:
    m = metric(success_condition=success, failure_condition=failure)
    assert measurement_phase(m, value) == (expected, None)


@pytest.mark.parametrize(
    ("success", "failure", "value", "message_start", "message_part"),
    [
        pytest.param(
            "result >",
            None,
            1.0,
            'successCondition "result >" is invalid: ',
            "",
            id="success-syntax-error",
        ),
        pytest.param(
            None,
            "result >>> 1",
            1.0,
            'failureCondition "result >>> 1" is invalid: ',
            "",
            id="failure-syntax-error",
        ),
        pytest.param(
            "result[0] > 1",
            None,
            [],
            'successCondition "result[0] > 1" failed: ',
            "metric result is nil or empty",
            id="empty-result",
        ),
        pytest.param(
            "result > 1",
            None,
            None,
            'successCondition "result > 1" failed: ',
            "metric result is nil or empty",
            id="nil-result",
        ),
        pytest.param(
            "result", None, 3.0, 'successCondition "result" returned float, expected a bool', "", id="non-bool"
        ),
    ],
)
def test_measurement_phase_condition_error(
    success: str | None, failure: str | None, value: object, message_start: str, message_part: str
) -> None:
    phase, message = measurement_phase(metric(success_condition=success, failure_condition=failure), value)
    assert phase == "Error"
    assert message is not None
    assert message.startswith(message_start)
    assert message_part in message


def test_measurement_phase_now_is_measurement_time() -> None:
    m = metric(success_condition='now() == date("2026-11-26T05:00:00Z")')
    assert measurement_phase(m, 1.0, now=datetime(2026, 11, 26, 5, tzinfo=UTC)) == ("Successful", None)
    assert measurement_phase(m, 1.0, now=datetime(2026, 11, 26, 6, tzinfo=UTC)) == ("Failed", None)


def test_measurement_phase_uses_injected_evaluator() -> None:
    calls: list[tuple[str, object]] = []

    def evaluate(expression: str, value: object, *, now: object = None) -> bool:
        calls.append((expression, value))
        return True

    assert measurement_phase(metric(success_condition="anything"), 3, evaluate=evaluate) == ("Successful", None)
    assert calls == [("anything", 3)]


def test_measurement_phase_evaluator_exception_is_error() -> None:
    def evaluate(expression: str, value: object, *, now: object = None) -> bool:
        raise RuntimeError("boom")

    assert measurement_phase(metric(failure_condition="x"), 1, evaluate=evaluate) == (
        "Error",
        'could not evaluate failureCondition "x": boom',
    )


# --- counters ---------------------------------------------------------------------------


def _counters(r: MetricResult) -> dict[str, int | None]:
    return {
        "count": r.count,
        "successful": r.successful,
        "failed": r.failed,
        "inconclusive": r.inconclusive,
        "error": r.error,
        "consecutive_error": r.consecutive_error,
        "consecutive_success": r.consecutive_success,
    }


ZERO = dict.fromkeys(
    ("count", "successful", "failed", "inconclusive", "error", "consecutive_error", "consecutive_success"), 0
)


@pytest.mark.parametrize(
    ("before", "phase", "after"),
    [
        pytest.param({}, "Successful", {"count": 1, "successful": 1, "consecutive_success": 1}, id="first-success"),
        pytest.param({}, "Failed", {"count": 1, "failed": 1}, id="first-failed"),
        pytest.param({}, "Inconclusive", {"count": 1, "inconclusive": 1}, id="first-inconclusive"),
        pytest.param({}, "Error", {"error": 1, "consecutive_error": 1}, id="error-does-not-count"),
        pytest.param(
            {"count": 2, "successful": 2, "consecutive_success": 2},
            "Error",
            {"count": 2, "successful": 2, "error": 1, "consecutive_error": 1},
            id="error-resets-consecutive-success",
        ),
        pytest.param(
            {"count": 2, "successful": 2, "consecutive_success": 2},
            "Failed",
            {"count": 3, "successful": 2, "failed": 1},
            id="failed-resets-consecutive-success",
        ),
        pytest.param(
            {"error": 3, "consecutive_error": 3},
            "Successful",
            {"count": 1, "successful": 1, "error": 3, "consecutive_success": 1},
            id="success-resets-consecutive-error",
        ),
        pytest.param(
            {"error": 2, "consecutive_error": 2},
            "Inconclusive",
            {"count": 1, "inconclusive": 1, "error": 2},
            id="inconclusive-resets-consecutive-error",
        ),
        pytest.param(
            {"error": 2, "consecutive_error": 2},
            "Error",
            {"error": 3, "consecutive_error": 3},
            id="errors-accumulate",
        ),
        pytest.param(
            {"count": 1, "successful": 1, "consecutive_success": 1},
            "Running",
            {"count": 1, "successful": 1, "consecutive_success": 1},
            id="in-flight-leaves-counters",
        ),
    ],
)
def test_record_measurement_counters(before: dict[str, int], phase: str, after: dict[str, int]) -> None:
    start = MetricResult(name="m", phase="Running", **before)
    updated = record_measurement(start, Measurement(phase=phase), 10)
    assert _counters(updated) == {**ZERO, **after}
    assert updated.measurements is not None
    assert updated.measurements[-1].phase == phase
    assert start.measurements is None  # input untouched


@pytest.mark.parametrize(
    ("existing", "retention", "kept"),
    [
        pytest.param(12, 10, 10, id="default-ten"),
        pytest.param(3, 2, 2, id="retention-limit"),
        pytest.param(0, 10, 1, id="first"),
        pytest.param(20, 0, 10, id="zero-means-default"),
    ],
)
def test_record_measurement_trims_oldest(existing: int, retention: int, kept: int) -> None:
    old = [Measurement(phase="Successful", value=str(i)) for i in range(existing)]
    updated = record_measurement(
        MetricResult(name="m", phase="Running", measurements=old), Measurement(phase="Failed", value="new"), retention
    )
    assert updated.measurements is not None
    assert len(updated.measurements) == kept
    assert updated.measurements[-1].value == "new"
    if kept > 1:
        assert updated.measurements[-2].value == str(existing - 1)


# --- effective count --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, 1, id="unset-no-interval-one"),
        pytest.param({"interval": "1m"}, None, id="unset-with-interval-unbounded"),
        pytest.param({"count": 0, "interval": "1m"}, None, id="zero-with-interval-unbounded"),
        pytest.param({"count": 0}, 1, id="zero-no-interval-one"),
        pytest.param({"count": 5, "interval": "1m"}, 5, id="explicit"),
        pytest.param({"count": "3", "interval": "1m"}, 3, id="string"),
    ],
)
def test_effective_count(fields: dict[str, Any], expected: int | None) -> None:
    assert effective_count(metric(**fields)) == expected


# --- metric phase -----------------------------------------------------------------------

UNBOUNDED = {"interval": "1m"}


@pytest.mark.parametrize(
    ("fields", "res", "terminating", "expected"),
    [
        pytest.param({}, None, False, "Pending", id="no-result-pending"),
        pytest.param({}, None, True, "Successful", id="no-result-terminating-successful"),
        pytest.param({}, result(done=()), False, "Pending", id="no-measurements-pending"),
        pytest.param({}, result(done=()), True, "Successful", id="no-measurements-terminating-successful"),
        pytest.param({}, result(phase="Failed", count=1, successful=1), False, "Failed", id="completed-unchanged"),
        pytest.param(
            {}, result(phase="Successful", failed=5, count=5), False, "Successful", id="completed-ignores-counters"
        ),
        pytest.param({}, result(done=("Successful", "Running"), count=1), False, "Running", id="in-flight-running"),
        pytest.param({}, result(done=("Running",)), True, "Running", id="in-flight-running-when-terminating"),
        pytest.param(UNBOUNDED, result(count=1, failed=1), False, "Failed", id="failed-over-default-limit"),
        pytest.param(
            {**UNBOUNDED, "failure_limit": 1}, result(count=1, failed=1), False, "Running", id="failed-at-limit"
        ),
        pytest.param({**UNBOUNDED, "failure_limit": 1}, result(count=2, failed=2), False, "Failed", id="failed-over"),
        pytest.param(
            {**UNBOUNDED, "failure_limit": "2"}, result(count=2, failed=2), False, "Running", id="failure-limit-string"
        ),
        pytest.param(
            {**UNBOUNDED, "failure_limit": -1, "consecutive_success_limit": 3},
            result(count=9, failed=9),
            False,
            "Running",
            id="failure-limit-disabled",
        ),
        pytest.param(UNBOUNDED, result(count=1, inconclusive=1), False, "Inconclusive", id="inconclusive-over"),
        pytest.param(
            {**UNBOUNDED, "inconclusive_limit": 1},
            result(count=1, inconclusive=1),
            False,
            "Running",
            id="inconclusive-at-limit",
        ),
        pytest.param(
            UNBOUNDED,
            result(count=2, failed=1, inconclusive=1),
            False,
            "Inconclusive",
            id="failed-and-inconclusive-over-is-inconclusive",
        ),
        pytest.param(UNBOUNDED, result(error=5, consecutive_error=5), False, "Error", id="errors-over-default-4"),
        pytest.param(UNBOUNDED, result(error=4, consecutive_error=4), False, "Running", id="errors-at-default-4"),
        pytest.param(
            {**UNBOUNDED, "consecutive_error_limit": 0},
            result(error=1, consecutive_error=1),
            False,
            "Error",
            id="error-limit-zero",
        ),
        pytest.param(
            {**UNBOUNDED, "consecutive_error_limit": "1"},
            result(error=1, consecutive_error=1),
            False,
            "Running",
            id="error-limit-string",
        ),
        pytest.param(
            UNBOUNDED,
            result(count=1, failed=1, error=5, consecutive_error=5),
            False,
            "Error",
            id="error-overrides-failed",
        ),
        pytest.param(
            UNBOUNDED,
            result(count=1, inconclusive=1, error=5, consecutive_error=5),
            False,
            "Error",
            id="error-overrides-inconclusive",
        ),
        pytest.param(
            {"interval": "1m", "count": 10, "consecutive_success_limit": 3},
            result(count=3, successful=3, consecutive_success=3),
            False,
            "Successful",
            id="consecutive-success-early",
        ),
        pytest.param(
            {"interval": "1m", "count": 10, "consecutive_success_limit": 3},
            result(count=2, successful=2, consecutive_success=2),
            False,
            "Running",
            id="consecutive-success-not-yet",
        ),
        pytest.param(
            {"interval": "1m", "count": 3},
            result(count=3, successful=3, consecutive_success=3),
            False,
            "Successful",
            id="count-reached",
        ),
        pytest.param(
            {"interval": "1m", "count": 3, "failure_limit": 1},
            result(count=3, successful=2, failed=1),
            False,
            "Successful",
            id="count-reached-failures-within-limit",
        ),
        pytest.param(
            {"interval": "1m", "count": 3, "failure_limit": 1},
            result(count=3, successful=1, failed=2),
            False,
            "Failed",
            id="count-reached-but-failed-over-limit",
        ),
        pytest.param(
            {"interval": "1m", "count": 4, "failure_limit": 1, "consecutive_success_limit": 3},
            result(count=4, successful=3, failed=1, consecutive_success=1),
            False,
            "Inconclusive",
            id="count-reached-without-streak-inconclusive",
        ),
        pytest.param(
            {"interval": "1m", "count": 4, "failure_limit": -1, "consecutive_success_limit": 3},
            result(count=4, successful=2, failed=2, consecutive_success=1),
            False,
            "Failed",
            id="count-reached-without-streak-failure-disabled-failed",
        ),
        pytest.param(
            {"interval": "1m", "count": 3, "failure_limit": 1, "consecutive_success_limit": 2},
            result(count=3, successful=2, failed=1, consecutive_success=2),
            False,
            "Successful",
            id="streak-wins-over-count",
        ),
        pytest.param({}, result(count=1, successful=1), False, "Successful", id="single-measurement-default"),
        pytest.param(
            {}, result(done=("Error",), error=1, consecutive_error=1), False, "Running", id="single-error-retries"
        ),
        pytest.param(
            {}, result(done=("Error",), error=1, consecutive_error=1), True, "Successful", id="single-error-terminated"
        ),
        pytest.param(
            UNBOUNDED,
            result(count=50, successful=50, consecutive_success=50),
            False,
            "Running",
            id="unbounded-keeps-running",
        ),
        pytest.param(
            UNBOUNDED,
            result(count=50, successful=50, consecutive_success=50),
            True,
            "Successful",
            id="unbounded-terminated-successful",
        ),
        pytest.param(
            {"interval": "1m", "count": 5},
            result(count=2, successful=2),
            True,
            "Successful",
            id="bounded-terminated-early-successful",
        ),
        pytest.param(
            {"interval": "1m", "count": "3"},
            result(count=3, successful=3),
            False,
            "Successful",
            id="count-string",
        ),
    ],
)
def test_metric_phase(fields: dict[str, Any], res: MetricResult | None, terminating: bool, expected: str) -> None:
    assert metric_phase(metric(**fields), res, terminating=terminating) == expected


# --- run phase --------------------------------------------------------------------------

A = metric("a", interval="1m")
B = metric("b", interval="1m", failure_limit=1)
C = metric("c", interval="1m", count=4, failure_limit=1, consecutive_success_limit=3)


def done(name: str, phase: str, **fields: Any) -> MetricResult:
    return result(name, phase, **fields)


@pytest.mark.parametrize(
    ("metrics", "results", "terminate", "dry_run", "expected"),
    [
        pytest.param(
            [A, B],
            [done("a", "Successful"), done("b", "Successful")],
            None,
            None,
            ("Successful", ""),
            id="all-successful",
        ),
        pytest.param(
            [A, B], [done("a", "Successful"), done("b", "Running")], None, None, ("Running", ""), id="one-running"
        ),
        pytest.param([A, B], [done("a", "Successful")], None, None, ("Running", ""), id="one-without-result"),
        pytest.param([A, B], [], None, None, ("Running", ""), id="nothing-yet"),
        pytest.param(
            [A, B],
            [done("a", "Successful"), done("b", "Failed", failed=2, count=2)],
            None,
            None,
            ("Failed", 'Metric "b" assessed Failed due to failed (2) > failureLimit (1)'),
            id="failed-message",
        ),
        pytest.param(
            [A, B],
            [done("a", "Inconclusive", inconclusive=1, count=1), done("b", "Successful")],
            None,
            None,
            ("Inconclusive", 'Metric "a" assessed Inconclusive due to inconclusive (1) > inconclusiveLimit (0)'),
            id="inconclusive-message",
        ),
        pytest.param(
            [A, B],
            [
                done("a", "Error", error=5, consecutive_error=5, message="connection refused"),
                done("b", "Inconclusive", inconclusive=1, count=1),
            ],
            None,
            None,
            (
                "Error",
                'Metric "a" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): '
                '"Error Message: connection refused"',
            ),
            id="error-worse-than-inconclusive-with-error-message",
        ),
        pytest.param(
            [A, B],
            [done("a", "Error", error=5, consecutive_error=5), done("b", "Failed", failed=2, count=2)],
            None,
            None,
            ("Failed", 'Metric "b" assessed Failed due to failed (2) > failureLimit (1)'),
            id="failed-worse-than-error",
        ),
        pytest.param(
            [A, B],
            [done("a", "Failed", failed=1, count=1), done("b", "Failed", failed=3, count=3)],
            None,
            None,
            ("Failed", 'Metric "a" assessed Failed due to failed (1) > failureLimit (0)'),
            id="first-worst-in-spec-order",
        ),
        pytest.param(
            [A, B],
            [done("a", "Failed", failed=1, count=1), done("b", "Successful")],
            None,
            {"a"},
            ("Successful", ""),
            id="dry-run-failure-ignored",
        ),
        pytest.param(
            [A, B],
            [done("a", "Failed", failed=1, count=1), done("b", "Error", error=5, consecutive_error=5)],
            None,
            {"a", "b"},
            ("Successful", ""),
            id="all-dry-run-successful",
        ),
        pytest.param(
            [A, B],
            [done("a", "Failed", failed=1, count=1), done("b", "Running")],
            None,
            {"a"},
            ("Running", ""),
            id="dry-run-failure-does-not-terminate",
        ),
        pytest.param(
            [A, B],
            [done("a", "Failed", failed=1, count=1, dry_run=True), done("b", "Successful")],
            None,
            None,
            ("Successful", ""),
            id="dry-run-from-result-flag",
        ),
        pytest.param(
            [A, B],
            [done("a", "Running"), done("b", "Successful")],
            None,
            {"a"},
            ("Running", ""),
            id="incomplete-dry-run-metric-keeps-running",
        ),
        pytest.param([A, B], [], True, None, ("Successful", "Run Terminated"), id="terminated-before-any-result"),
        pytest.param(
            [A, B],
            [done("a", "Successful")],
            True,
            None,
            ("Successful", "Run Terminated"),
            id="terminated-partial",
        ),
        pytest.param(
            [A, B],
            [done("a", "Successful"), done("b", "Failed", failed=2, count=2)],
            True,
            None,
            ("Failed", 'Metric "b" assessed Failed due to failed (2) > failureLimit (1)'),
            id="terminated-failure-message-wins",
        ),
        pytest.param(
            [A, B],
            [done("a", "Failed", failed=1, count=1), done("b", "Running")],
            None,
            None,
            ("Failed", 'Metric "a" assessed Failed due to failed (1) > failureLimit (0)'),
            id="failure-terminates-run-early",
        ),
        pytest.param(
            [A, C],
            [
                done("a", "Successful"),
                done("c", "Inconclusive", count=4, successful=3, failed=1, consecutive_success=1),
            ],
            None,
            None,
            (
                "Inconclusive",
                'Metric "c" assessed Inconclusive due to consecutiveSuccess (1) < consecutiveSuccessLimit (3) '
                "when count (4) was reached",
            ),
            id="count-reached-without-streak-message",
        ),
    ],
)
def test_run_phase(
    metrics: list[Metric],
    results: list[MetricResult],
    terminate: bool | None,
    dry_run: set[str] | None,
    expected: tuple[str, str],
) -> None:
    assert run_phase(run(*metrics, terminate=terminate), results, dry_run=dry_run) == expected


def test_run_phase_uses_substituted_metrics() -> None:
    templated = metric("a", interval="1m", failure_limit="{{args.limit}}")
    resolved = metric("a", interval="1m", failure_limit=2)
    phase, message = run_phase(
        run(templated), [done("a", "Failed", failed=3, count=3)], metrics=[resolved], dry_run=set()
    )
    assert (phase, message) == ("Failed", 'Metric "a" assessed Failed due to failed (3) > failureLimit (2)')


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        pytest.param("Successful", "Running", True, id="running-worse-than-successful"),
        pytest.param("Running", "Pending", True, id="pending-worse-than-running"),
        pytest.param("Pending", "Inconclusive", True, id="inconclusive-worse-than-pending"),
        pytest.param("Inconclusive", "Error", True, id="error-worse-than-inconclusive"),
        pytest.param("Error", "Failed", True, id="failed-worst"),
        pytest.param("Failed", "Error", False, id="error-not-worse-than-failed"),
        pytest.param("Failed", "Failed", False, id="equal-not-worse"),
    ],
)
def test_is_worse(current: str, new: str, expected: bool) -> None:
    assert is_worse(current, new) is expected


def test_is_terminating() -> None:
    assert is_terminating(run(A, terminate=True), [])
    assert not is_terminating(run(A), [done("a", "Successful")])
    assert is_terminating(run(A), [done("a", "Inconclusive")])
    assert not is_terminating(run(A), [done("a", "Failed")], dry_run={"a"})


def test_run_summaries_split_dry_run() -> None:
    metrics = [A, B, C, metric("d", interval="1m")]
    results = [
        done("a", "Successful"),
        done("b", "Failed", failed=2, count=2),
        done("c", "Error", dry_run=True),
        done("d", "Running"),
    ]
    summary, dry = run_summaries(metrics, results, dry_run={"c"})
    assert summary == RunSummary(count=3, successful=1, failed=1, inconclusive=0, error=0)
    assert dry == RunSummary(count=1, successful=0, failed=0, inconclusive=0, error=1)
