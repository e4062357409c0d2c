"""When each metric of an AnalysisRun is due, and when to reconcile the run next (b.5), pure.

Why separate from the runner: scheduling is arithmetic over status timestamps, and the
controller needs `next_reconcile` to set its requeue timer without running anything. Rules,
as in Argo's `generateMetricTasks` / `calculateNextReconcileTime`:

- a metric's first measurement waits `initialDelay` after `status.startedAt`;
- the next one is due `interval` after the previous measurement's `finishedAt`;
- after an Error measurement the retry comes a fixed 10 s later, whatever the interval (an
  Error does not count towards `count`, so a single-measurement metric is retried too);
- nothing is due for a completed metric, once `count` is reached, or while the run is
  terminating (except resuming an in-flight measurement, so it can be ended).

One deliberate difference: a measurement is due when `now >= finishedAt + interval` (Argo
uses a strict "after"), so a timer that fires exactly at `next_reconcile` finds work to do.

Also here: the ttlStrategy arithmetic the controller uses to delete completed runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rollouts.analysis.assess import effective_count, is_terminating
from rollouts.core.durations import DurationError, parse_go_duration
from rollouts.core.timeutil import parse_rfc3339
from rollouts.model.analysis import (
    COMPLETED_PHASES,
    PHASE_ERROR,
    PHASE_FAILED,
    PHASE_SUCCESSFUL,
    AnalysisRun,
    Measurement,
    Metric,
    MetricResult,
)

__all__ = [
    "ERROR_RETRY_INTERVAL",
    "REASON_ERROR_RETRY",
    "REASON_FIRST",
    "REASON_INTERVAL",
    "REASON_RESUME",
    "DueMetric",
    "due_metric_reasons",
    "due_metrics",
    "next_reconcile",
    "ttl_expired",
    "ttl_expires_at",
]

ERROR_RETRY_INTERVAL = timedelta(seconds=10)

REASON_FIRST = "first measurement"
REASON_INTERVAL = "interval elapsed"
REASON_ERROR_RETRY = "retry after error"
REASON_RESUME = "resume in-flight measurement"


@dataclass(frozen=True)
class DueMetric:
    """A metric to measure now, and why (one of the `REASON_*` strings)."""

    metric: Metric
    reason: str


def _duration(text: str | None) -> timedelta | None:
    if not text:
        return None
    try:
        return timedelta(seconds=parse_go_duration(text))
    except DurationError:
        return None  # validation reports it; scheduling just skips the metric (as Argo does)


def _results(run: AnalysisRun) -> dict[str, MetricResult]:
    results = run.status.metric_results if run.status is not None else None
    return {result.name: result for result in results or []}


def _started_at(run: AnalysisRun) -> datetime | None:
    return parse_rfc3339(run.status.started_at) if run.status is not None else None


def _last(result: MetricResult | None) -> Measurement | None:
    if result is None or not result.measurements:
        return None
    return result.measurements[-1]


def _resume_at(last: Measurement, now: datetime) -> datetime:
    """When an in-flight measurement is resumed (now when no, or an unreadable, resumeAt)."""
    return parse_rfc3339(last.resume_at) or now


def _next_after(metric: Metric, last: Measurement, now: datetime) -> datetime | None:
    """When the measurement after a finished `last` is due; None when no repeat is wanted.

    An unreadable `finishedAt` makes it due now: measuring again beats a metric stuck forever.
    """
    finished = parse_rfc3339(last.finished_at)
    if finished is None:
        return now
    if last.phase == PHASE_ERROR:
        return finished + ERROR_RETRY_INTERVAL
    if metric.interval:
        interval = _duration(metric.interval)
        return None if interval is None else finished + interval
    return None


def due_metric_reasons(run: AnalysisRun, now: datetime, *, metrics: Sequence[Metric] | None = None) -> list[DueMetric]:
    """Metrics (in spec order) to measure at `now`, with the reason.

    `metrics` defaults to the run's spec metrics; pass the arg-substituted ones when
    `interval`/`count` are templated.
    """
    specs = list(metrics) if metrics is not None else list(run.spec.metrics)
    results = _results(run)
    terminating = is_terminating(run)
    started = _started_at(run)
    due: list[DueMetric] = []
    for metric in specs:
        result = results.get(metric.name)
        if result is not None and result.phase in COMPLETED_PHASES:
            continue
        last = _last(result)
        if last is not None and last.finished_at is None:
            if _resume_at(last, now) <= now:
                due.append(DueMetric(metric, REASON_RESUME))
            continue
        if terminating:
            continue
        if last is None:
            delay = _duration(metric.initial_delay)
            if metric.initial_delay and (delay is None or started is None or started + delay > now):
                continue
            due.append(DueMetric(metric, REASON_FIRST))
            continue
        wanted = effective_count(metric)
        if wanted is not None and result is not None and (result.count or 0) >= wanted:
            continue
        at = _next_after(metric, last, now)
        if at is not None and now >= at:
            reason = REASON_ERROR_RETRY if last.phase == PHASE_ERROR else REASON_INTERVAL
            due.append(DueMetric(metric, reason))
    return due


def due_metrics(run: AnalysisRun, now: datetime, *, metrics: Sequence[Metric] | None = None) -> list[Metric]:
    """The metrics to measure at `now`, in spec order (see `due_metric_reasons`)."""
    return [item.metric for item in due_metric_reasons(run, now, metrics=metrics)]


def next_reconcile(run: AnalysisRun, now: datetime, *, metrics: Sequence[Metric] | None = None) -> datetime | None:
    """The earliest time a metric becomes due (may be <= now); None when nothing will be."""
    if run.status is not None and run.status.phase in COMPLETED_PHASES:
        return None
    specs = list(metrics) if metrics is not None else list(run.spec.metrics)
    results = _results(run)
    terminating = is_terminating(run)
    started = _started_at(run)
    candidates: list[datetime] = []
    for metric in specs:
        result = results.get(metric.name)
        if result is not None and result.phase in COMPLETED_PHASES:
            continue
        last = _last(result)
        if last is not None and last.finished_at is None:
            candidates.append(_resume_at(last, now))
            continue
        if terminating:
            continue
        if last is None:
            if metric.initial_delay:
                delay = _duration(metric.initial_delay)
                if delay is not None:
                    candidates.append((started or now) + delay)
            else:
                candidates.append(now)
            continue
        wanted = effective_count(metric)
        if wanted is not None and result is not None and (result.count or 0) >= wanted:
            continue
        at = _next_after(metric, last, now)
        if at is not None:
            candidates.append(at)
    return min(candidates) if candidates else None


def ttl_expires_at(run: AnalysisRun) -> datetime | None:
    """When a completed run's ttlStrategy says to delete it; None when it should stay.

    `secondsAfterSuccess` applies to Successful runs, `secondsAfterFailure` to Failed ones,
    `secondsAfterCompletion` to any completed run the first two do not cover.
    """
    status = run.status
    ttl = run.spec.ttl_strategy
    if status is None or status.phase not in COMPLETED_PHASES or ttl is None:
        return None
    completed = parse_rfc3339(status.completed_at)
    if completed is None:
        return None
    seconds: int | None
    if ttl.seconds_after_success is not None and status.phase == PHASE_SUCCESSFUL:
        seconds = ttl.seconds_after_success
    elif ttl.seconds_after_failure is not None and status.phase == PHASE_FAILED:
        seconds = ttl.seconds_after_failure
    else:
        seconds = ttl.seconds_after_completion
    if seconds is None:
        return None
    return completed + timedelta(seconds=seconds)


def ttl_expired(run: AnalysisRun, now: datetime) -> bool:
    """Whether the controller should delete this completed run now."""
    expires = ttl_expires_at(run)
    return expires is not None and now >= expires
