"""The AnalysisRun state machine: measurement → metric → run phase (b.5), pure.

Why pure functions: the verdicts are the product's promise ("the same analysis verdicts from
the same measurements"), so they are computed from data alone — no clock, no I/O — and tested
as tables. The runner (`rollouts.analysis.runner`) feeds them provider results and writes the
outcome into the run's status.

Semantics follow Argo Rollouts' code, quirks included:

- A measurement with neither condition is Successful; with both, failure wins; with both
  false it is Inconclusive. A condition that cannot be evaluated makes it Error.
- An Error measurement does not count towards `count`; it resets `consecutiveSuccess`.
- Metric limits are checked in the order failed → inconclusive → consecutiveErrors and the
  later check wins (a metric over both the failure and the inconclusive limits is
  Inconclusive; Error wins over both).
- The run is "terminating" once `spec.terminate` is set or a non-dry-run metric is Failed,
  Error or Inconclusive: unbounded metrics then end Successful. The run's phase is the worst
  non-dry-run metric phase in the order Successful < Running < Pending < Inconclusive < Error
  < Failed; dry-run metrics never change it.

Our additions (Argo has no message for them): when `count` is reached without
`consecutiveSuccessLimit` consecutive successes, the run message says so.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Protocol

from rollouts.analysis.expr import ConditionError, evaluate_condition
from rollouts.model.analysis import (
    COMPLETED_PHASES,
    PHASE_ERROR,
    PHASE_FAILED,
    PHASE_INCONCLUSIVE,
    PHASE_PENDING,
    PHASE_RUNNING,
    PHASE_SUCCESSFUL,
    AnalysisRun,
    IntOrString,
    Measurement,
    Metric,
    MetricResult,
    RunSummary,
)

__all__ = [
    "DEFAULT_CONSECUTIVE_ERROR_LIMIT",
    "DEFAULT_MEASUREMENT_RETENTION",
    "PHASE_ORDER",
    "Clock",
    "Evaluator",
    "assessment_reason",
    "default_evaluate",
    "dry_run_result_message",
    "effective_count",
    "is_terminating",
    "is_worse",
    "limit_breach",
    "measurement_phase",
    "metric_phase",
    "record_measurement",
    "run_phase",
    "run_summaries",
]

DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
DEFAULT_MEASUREMENT_RETENTION = 10
RUN_TERMINATED_MESSAGE = "Run Terminated"

PHASE_ORDER: tuple[str, ...] = (
    PHASE_SUCCESSFUL,
    PHASE_RUNNING,
    PHASE_PENDING,
    PHASE_INCONCLUSIVE,
    PHASE_ERROR,
    PHASE_FAILED,
)
"""Best to worst, as Argo's `analysisStatusOrder`."""


Clock = Callable[[], datetime]


class Evaluator(Protocol):
    """A condition evaluator: `rollouts.analysis.expr.evaluate_condition` or a test stand-in.

    `now` is the clock behind the language's `now()`.
    """

    def __call__(self, expression: str, result: object, /, *, now: Clock | None = None) -> bool: ...


def default_evaluate(expression: str, result: object, *, now: Clock | None = None) -> bool:
    """Evaluate with the product's condition language."""
    return evaluate_condition(expression, result, now=now)


def _int(value: IntOrString | None, default: int) -> int:
    """Go's `IntOrString.IntValue()`: a string that is not an integer reads as 0."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    try:
        return int(value.strip(), 10)
    except ValueError:
        return 0


def _failure_limit(metric: Metric) -> int:
    return _int(metric.failure_limit, 0)


def _inconclusive_limit(metric: Metric) -> int:
    return _int(metric.inconclusive_limit, 0)


def _consecutive_error_limit(metric: Metric) -> int:
    return _int(metric.consecutive_error_limit, DEFAULT_CONSECUTIVE_ERROR_LIMIT)


def _consecutive_success_limit(metric: Metric) -> int:
    return _int(metric.consecutive_success_limit, 0)


def effective_count(metric: Metric) -> int | None:
    """How many measurements the metric takes; None = unbounded (interval set, no count)."""
    count = _int(metric.count, 0)
    if count == 0:
        return None if metric.interval else 1
    return count


# --- measurement --------------------------------------------------------------------------


def _nil_or_empty(result: object) -> bool:
    return result is None or (isinstance(result, list | tuple) and len(result) == 0)


def _eval_error(kind: str, expression: str, result: object, exc: Exception) -> str:
    """The Error measurement's message, naming the condition (`successCondition "..." failed: ...`)."""
    text = str(exc)
    if isinstance(exc, ConditionError) and text.startswith("condition "):
        # The language's message already quotes the expression and adds the nil/empty hint.
        return kind + text[len("condition") :]
    if _nil_or_empty(result):
        return (
            f'could not evaluate {kind} "{expression}": metric result is nil or empty: '
            "no data returned from the metric provider"
        )
    return f'could not evaluate {kind} "{expression}": {exc}'


def measurement_phase(
    metric: Metric,
    result: object,
    *,
    evaluate: Evaluator | None = None,
    now: datetime | None = None,
) -> tuple[str, str | None]:
    """(phase, message) of one measurement whose provider returned `result` (Argo's EvaluateResult).

    `now` is the measurement time, seen by `now()` in conditions.
    """
    evaluator = evaluate if evaluate is not None else default_evaluate
    clock: Clock | None = None if now is None else (lambda: now)
    success_expr = metric.success_condition or ""
    failure_expr = metric.failure_condition or ""
    success = False
    failure = False
    # Any exception from the evaluator is an Error measurement: a bad condition (or a bug in
    # the evaluator) must end as a verdict, never kill the run.
    if success_expr:
        try:
            success = bool(evaluator(success_expr, result, now=clock))
        except Exception as exc:
            return PHASE_ERROR, _eval_error("successCondition", success_expr, result, exc)
    if failure_expr:
        try:
            failure = bool(evaluator(failure_expr, result, now=clock))
        except Exception as exc:
            return PHASE_ERROR, _eval_error("failureCondition", failure_expr, result, exc)

    if not success_expr and not failure_expr:
        return PHASE_SUCCESSFUL, None
    if success_expr and not failure_expr:
        failure = not success
    elif failure_expr and not success_expr:
        success = not failure
    if failure:
        return PHASE_FAILED, None
    if not success:
        return PHASE_INCONCLUSIVE, None
    return PHASE_SUCCESSFUL, None


def record_measurement(
    result: MetricResult, m: Measurement, retention: int = DEFAULT_MEASUREMENT_RETENTION
) -> MetricResult:
    """A copy of `result` with `m` appended (newest last), counters updated, history trimmed."""
    new = result.model_copy(deep=True)
    count = new.count or 0
    successful = new.successful or 0
    failed = new.failed or 0
    inconclusive = new.inconclusive or 0
    error = new.error or 0
    consecutive_error = new.consecutive_error or 0
    consecutive_success = new.consecutive_success or 0
    if m.phase == PHASE_SUCCESSFUL:
        successful += 1
        count += 1
        consecutive_success += 1
        consecutive_error = 0
    elif m.phase == PHASE_FAILED:
        failed += 1
        count += 1
        consecutive_success = 0
        consecutive_error = 0
    elif m.phase == PHASE_INCONCLUSIVE:
        inconclusive += 1
        count += 1
        consecutive_success = 0
        consecutive_error = 0
    elif m.phase == PHASE_ERROR:
        error += 1
        consecutive_error += 1
        consecutive_success = 0
    new.count = count
    new.successful = successful
    new.failed = failed
    new.inconclusive = inconclusive
    new.error = error
    new.consecutive_error = consecutive_error
    new.consecutive_success = consecutive_success
    measurements = [*(new.measurements or []), m.model_copy(deep=True)]
    keep = retention if retention > 0 else DEFAULT_MEASUREMENT_RETENTION
    new.measurements = measurements[-keep:]
    return new


# --- metric -------------------------------------------------------------------------------


def limit_breach(metric: Metric, result: MetricResult) -> tuple[str, str] | None:
    """(phase, reason) when a limit is exceeded (Argo's assessMetricFailureInconclusiveOrError).

    Checks run in order and the last breach wins: failed, then inconclusive, then errors.
    """
    breach: tuple[str, str] | None = None
    failure_limit = _failure_limit(metric)
    failed = result.failed or 0
    if failure_limit >= 0 and failed > failure_limit:
        breach = (PHASE_FAILED, f"failed ({failed}) > failureLimit ({failure_limit})")
    inconclusive_limit = _inconclusive_limit(metric)
    inconclusive = result.inconclusive or 0
    if inconclusive > inconclusive_limit:
        breach = (
            PHASE_INCONCLUSIVE,
            f"inconclusive ({inconclusive}) > inconclusiveLimit ({inconclusive_limit})",
        )
    error_limit = _consecutive_error_limit(metric)
    consecutive_error = result.consecutive_error or 0
    if consecutive_error > error_limit:
        breach = (
            PHASE_ERROR,
            f"consecutiveErrors ({consecutive_error}) > consecutiveErrorLimit ({error_limit})",
        )
    return breach


def _count_reached(metric: Metric, result: MetricResult) -> bool:
    wanted = effective_count(metric)
    return wanted is not None and (result.count or 0) >= wanted


def metric_phase(metric: Metric, result: MetricResult | None, *, terminating: bool) -> str:
    """The metric's phase from its counters and limits (Argo's assessMetricStatus)."""
    if result is not None and result.phase in COMPLETED_PHASES:
        return result.phase
    if result is None or not result.measurements:
        return PHASE_SUCCESSFUL if terminating else PHASE_PENDING
    if result.measurements[-1].phase not in COMPLETED_PHASES:
        return PHASE_RUNNING
    breach = limit_breach(metric, result)
    if breach is not None:
        return breach[0]
    success_limit = _consecutive_success_limit(metric)
    if success_limit > 0 and (result.consecutive_success or 0) >= success_limit:
        return PHASE_SUCCESSFUL
    if _count_reached(metric, result):
        if success_limit > 0:
            return PHASE_INCONCLUSIVE if _failure_limit(metric) >= 0 else PHASE_FAILED
        return PHASE_SUCCESSFUL
    return PHASE_SUCCESSFUL if terminating else PHASE_RUNNING


def assessment_reason(metric: Metric, result: MetricResult) -> str | None:
    """Why a completed metric is not Successful, for messages (`failed (3) > failureLimit (2)`)."""
    breach = limit_breach(metric, result)
    if breach is not None:
        return breach[1]
    success_limit = _consecutive_success_limit(metric)
    if (
        result.phase in (PHASE_INCONCLUSIVE, PHASE_FAILED)
        and success_limit > 0
        and _count_reached(metric, result)
        and (result.consecutive_success or 0) < success_limit
    ):
        return (
            f"consecutiveSuccess ({result.consecutive_success or 0}) < consecutiveSuccessLimit "
            f"({success_limit}) when count ({result.count or 0}) was reached"
        )
    return None


# --- run ----------------------------------------------------------------------------------


def is_worse(current: str, new: str) -> bool:
    """Whether `new` is a worse phase than `current` (unknown phases rank as Successful)."""

    def rank(phase: str) -> int:
        return PHASE_ORDER.index(phase) if phase in PHASE_ORDER else 0

    return rank(new) > rank(current)


def _is_dry_run(result: MetricResult, dry_run: Collection[str] | None) -> bool:
    if dry_run is not None and result.name in dry_run:
        return True
    return bool(result.dry_run)


def is_terminating(
    run: AnalysisRun,
    metric_results: Sequence[MetricResult] | None = None,
    *,
    dry_run: Collection[str] | None = None,
) -> bool:
    """`spec.terminate`, or a non-dry-run metric already Failed, Error or Inconclusive."""
    if run.spec.terminate:
        return True
    results = metric_results if metric_results is not None else (run.status.metric_results if run.status else None)
    for result in results or []:
        if _is_dry_run(result, dry_run):
            continue
        if result.phase in (PHASE_FAILED, PHASE_ERROR, PHASE_INCONCLUSIVE):
            return True
    return False


def run_phase(
    run: AnalysisRun,
    metric_results: Sequence[MetricResult],
    *,
    metrics: Sequence[Metric] | None = None,
    dry_run: Collection[str] | None = None,
) -> tuple[str, str]:
    """(phase, message) of the run from its assessed metric results (Argo's assessRunStatus).

    `metrics` defaults to the run's spec metrics (pass the arg-substituted ones when limits
    are templated); `dry_run` defaults to the results' own `dryRun` flags.
    """
    specs = list(metrics) if metrics is not None else list(run.spec.metrics)
    by_name = {result.name: result for result in metric_results}
    terminating = is_terminating(run, metric_results, dry_run=dry_run)
    worst: str | None = None
    message = RUN_TERMINATED_MESSAGE if run.spec.terminate else ""
    everything_completed = True
    for metric in specs:
        result = by_name.get(metric.name)
        if result is None or result.phase not in COMPLETED_PHASES:
            everything_completed = False
            continue
        if _is_dry_run(result, dry_run):
            if worst is None:
                worst = PHASE_SUCCESSFUL
            continue
        if worst is None or is_worse(worst, result.phase):
            worst = result.phase
            reason = assessment_reason(metric, result)
            if reason:
                message = f'Metric "{metric.name}" assessed {result.phase} due to {reason}'
                if result.message:
                    message += f': "Error Message: {result.message}"'
    message = message.strip()
    if terminating:
        return (worst or PHASE_SUCCESSFUL), message
    if not everything_completed or worst is None:
        return PHASE_RUNNING, ""
    return worst, message


def dry_run_result_message(metric: Metric, result: MetricResult) -> str | None:
    """The message Argo writes on a completed dry-run metric: `Metric assessed Failed due to ...`."""
    reason = assessment_reason(metric, result)
    if reason is None:
        return None
    return f"Metric assessed {result.phase} due to {reason}"


def run_summaries(
    metrics: Sequence[Metric],
    metric_results: Sequence[MetricResult],
    *,
    dry_run: Collection[str] | None = None,
) -> tuple[RunSummary, RunSummary]:
    """(runSummary, dryRunSummary): metric counts, and completed metrics tallied by phase."""
    summaries = {False: _Tally(), True: _Tally()}
    by_name = {result.name: result for result in metric_results}
    for metric in metrics:
        result = by_name.get(metric.name)
        is_dry = (dry_run is not None and metric.name in dry_run) or bool(result is not None and result.dry_run)
        tally = summaries[is_dry]
        tally.count += 1
        if result is not None and result.phase in COMPLETED_PHASES:
            tally.add(result.phase)
    return summaries[False].summary(), summaries[True].summary()


class _Tally:
    def __init__(self) -> None:
        self.count = 0
        self.by_phase = dict.fromkeys((PHASE_SUCCESSFUL, PHASE_FAILED, PHASE_INCONCLUSIVE, PHASE_ERROR), 0)

    def add(self, phase: str) -> None:
        self.by_phase[phase if phase in self.by_phase else PHASE_SUCCESSFUL] += 1

    def summary(self) -> RunSummary:
        return RunSummary(
            count=self.count,
            successful=self.by_phase[PHASE_SUCCESSFUL],
            failed=self.by_phase[PHASE_FAILED],
            inconclusive=self.by_phase[PHASE_INCONCLUSIVE],
            error=self.by_phase[PHASE_ERROR],
        )
