"""Reconcile one AnalysisRun: take the measurements that are due and assess the verdict.

Why this shape: the controller owns the clock, the store and the requeue timer; this module
owns one step of the run's life. `reconcile_run` takes the run as stored, returns the new run
(status filled in), when to call again, and whether anything changed, so the controller
writes status once and only on change. It is Argo's `reconcileAnalysisRun`:

1. completed runs are returned untouched (TTL deletion is the controller's job: see
   `ttl_expired`);
2. `startedAt` is set and the phase becomes Running on the first call;
3. args are resolved (secrets read now, redacted to `*****` everywhere they could surface)
   and substituted into every metric; the substituted metrics are validated, and the dryRun
   and measurementRetention rules checked. Any failure ends the run in phase Error with
   `Unable to resolve metric arguments: …` or `Analysis spec invalid: …`;
4. the due metrics are measured concurrently; a provider error or any exception from a
   provider becomes an Error measurement, never an exception out of this function. A provider
   that decides the phase itself (`ProviderResult.phase`, e.g. `job`) skips the conditions;
5. metric phases, then the run phase, message, summaries and `completedAt` are assessed.

One difference from Argo, on purpose: when a metric fails during this reconcile the run is
re-assessed at once as terminating, so the run completes now instead of on the next
reconcile (Argo gets there through the watch event its own status write triggers).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rollouts.analysis.args import SecretLookup, redact, resolve_run_args, substitute_args
from rollouts.analysis.assess import (
    DEFAULT_MEASUREMENT_RETENTION,
    Clock,
    Evaluator,
    dry_run_result_message,
    is_terminating,
    measurement_phase,
    metric_phase,
    record_measurement,
    run_phase,
    run_summaries,
)
from rollouts.analysis.errors import AnalysisArgError, AnalysisSpecError
from rollouts.analysis.providers.base import MetricProvider, ProviderError, ProviderResult
from rollouts.analysis.schedule import REASON_RESUME, DueMetric, due_metric_reasons, next_reconcile, ttl_expired
from rollouts.analysis.validate import (
    dry_run_metric_names,
    measurement_retention_limits,
    provider_kinds,
    validate_metrics,
)
from rollouts.core.timeutil import to_rfc3339
from rollouts.model.analysis import (
    COMPLETED_PHASES,
    PHASE_ERROR,
    PHASE_PENDING,
    PHASE_RUNNING,
    PHASE_SUCCESSFUL,
    AnalysisRun,
    AnalysisRunStatus,
    Measurement,
    Metric,
    MetricResult,
)

__all__ = ["METRIC_TERMINATED_MESSAGE", "RunOutcome", "reconcile_run", "ttl_expired"]

log = logging.getLogger(__name__)

METRIC_TERMINATED_MESSAGE = "Metric Terminated"


@dataclass
class RunOutcome:
    """The run after one reconcile, when to reconcile it next (None: never), and whether it changed."""

    run: AnalysisRun
    next_at: datetime | None
    changed: bool


def _no_secrets(namespace: str, name: str, key: str) -> str | None:
    return None


@dataclass
class _Taken:
    """One measurement's outcome, before it is recorded."""

    due: DueMetric
    measurement: Measurement
    metadata: dict[str, str]


def _provider_kind(metric: Metric) -> tuple[str | None, str]:
    """(kind, description): kind is None unless the metric has exactly one provider block."""
    kinds = provider_kinds(metric)
    if len(kinds) == 1 and kinds[0] in metric.provider:
        return kinds[0], kinds[0]
    return None, ", ".join(kinds) if kinds else "(none)"


async def _take(
    due: DueMetric,
    *,
    providers: Mapping[str, MetricProvider],
    now: Clock,
    evaluate: Evaluator | None,
    terminating: bool,
    in_flight: Measurement | None,
    context: Mapping[str, str],
) -> _Taken:
    metric = due.metric
    if in_flight is not None and terminating:
        # An in-flight measurement of a terminating run is ended, not resumed.
        ended = in_flight.model_copy(
            update={
                "phase": PHASE_SUCCESSFUL,
                "message": METRIC_TERMINATED_MESSAGE,
                "finished_at": to_rfc3339(now()),
                "resume_at": None,
            }
        )
        return _Taken(due, ended, {})
    started = now()
    kind, described = _provider_kind(metric)
    provider = providers.get(kind) if kind is not None else None
    spec: Any = metric.provider.get(kind) if kind is not None else None
    message: str | None
    if provider is None or kind is None:
        supported = ", ".join(sorted(providers)) or "(none)"
        message = f"provider {described} is not supported here: supported are {supported}"
        return _Taken(due, _error(message, started, now()), {})
    if not isinstance(spec, dict):
        message = f"provider.{kind} must be an object with the provider's fields, got {type(spec).__name__}"
        return _Taken(due, _error(message, started, now()), {})
    try:
        result: ProviderResult = await provider.measure(
            copy.deepcopy(spec), now=now(), context={**context, "metric": metric.name}
        )
    except ProviderError as exc:
        return _Taken(due, _error(str(exc) or type(exc).__name__, started, now()), {})
    except Exception as exc:
        log.warning("metric %r: provider %s raised %s", metric.name, kind, type(exc).__name__)
        return _Taken(due, _error(str(exc) or type(exc).__name__, started, now()), {})
    if result.phase is None:
        phase, message = measurement_phase(metric, result.value, evaluate=evaluate, now=started)
    elif result.phase in COMPLETED_PHASES:
        # The provider decided the phase itself (job: exit code): conditions are not evaluated.
        phase, message = result.phase, result.message
    else:
        message = (
            f"provider {kind} returned phase {result.phase!r}: expected one of {', '.join(sorted(COMPLETED_PHASES))}"
        )
        return _Taken(due, _error(message, started, now()), {})
    measurement = Measurement(
        phase=phase,
        message=message,
        started_at=to_rfc3339(started),
        finished_at=to_rfc3339(now()),
        value=result.text,
    )
    return _Taken(due, measurement, {str(k): str(v) for k, v in result.metadata.items()})


def _error(message: str, started: datetime, finished: datetime) -> Measurement:
    return Measurement(
        phase=PHASE_ERROR,
        message=message,
        started_at=to_rfc3339(started),
        finished_at=to_rfc3339(finished),
    )


def _redact_measurement(m: Measurement, secrets: set[str]) -> Measurement:
    if not secrets:
        return m
    return m.model_copy(
        update={
            "message": redact(m.message, secrets) if m.message else m.message,
            "value": redact(m.value, secrets) if m.value else m.value,
        }
    )


def _finish(original: AnalysisRun, new: AnalysisRun, next_at: datetime | None) -> RunOutcome:
    assert new.status is not None
    if not new.status.metric_results:
        new.status.metric_results = None
    return RunOutcome(run=new, next_at=next_at, changed=new.to_json() != original.to_json())


def _errored(original: AnalysisRun, new: AnalysisRun, message: str, now: Clock) -> RunOutcome:
    assert new.status is not None
    new.status.phase = PHASE_ERROR
    new.status.message = message
    new.status.completed_at = to_rfc3339(now())
    log.info("analysis run %s/%s: %s", new.metadata.namespace, new.metadata.name, message)
    return _finish(original, new, None)


def _assess_metrics(metrics: list[Metric], results: dict[str, MetricResult], *, terminating: bool) -> None:
    for metric in metrics:
        result = results.get(metric.name)
        if result is None:
            continue
        phase = metric_phase(metric, result, terminating=terminating)
        if phase != result.phase:
            if result.measurements:
                result.message = result.measurements[-1].message
            result.phase = phase


async def reconcile_run(
    run: AnalysisRun,
    *,
    providers: Mapping[str, MetricProvider],
    now: Clock,
    secrets: SecretLookup = _no_secrets,
    evaluate: Evaluator | None = None,
) -> RunOutcome:
    """One reconcile of `run` (see the module docstring). Never raises for bad input.

    `evaluate` replaces the condition evaluator (tests); by default conditions are evaluated
    with `rollouts.analysis.expr.evaluate_condition`.
    """
    if run.status is not None and run.status.phase in COMPLETED_PHASES:
        return RunOutcome(run=run, next_at=None, changed=False)

    new = run.model_copy(deep=True)
    status = new.status if new.status is not None else AnalysisRunStatus()
    new.status = status
    started = now()
    if not status.started_at:
        status.started_at = to_rfc3339(started)
    if status.phase in (None, "", PHASE_PENDING):
        status.phase = PHASE_RUNNING
    results_list: list[MetricResult] = list(status.metric_results or [])
    status.metric_results = results_list

    try:
        values, secret_names = resolve_run_args(new, secrets)
        metrics = [substitute_args(metric, values) for metric in new.spec.metrics]
    except AnalysisArgError as exc:
        return _errored(run, new, f"Unable to resolve metric arguments: {exc}", now)
    secret_values = {values[name] for name in secret_names if values[name]}

    try:
        validate_metrics(metrics)
        dry_run = dry_run_metric_names(new.spec.dry_run, metrics)
        retention = measurement_retention_limits(new.spec.measurement_retention, metrics)
    except AnalysisSpecError as exc:
        return _errored(run, new, redact(f"Analysis spec invalid: {exc}", secret_values), now)

    results = {result.name: result for result in results_list}
    due = due_metric_reasons(new, started, metrics=metrics)
    terminating = is_terminating(new, dry_run=dry_run)
    taken = await asyncio.gather(
        *(
            _take(
                item,
                providers=providers,
                now=now,
                evaluate=evaluate,
                terminating=terminating,
                in_flight=_in_flight(results.get(item.metric.name), item),
                context={
                    "namespace": run.metadata.namespace or "default",
                    "run_name": run.metadata.name,
                    "run_uid": run.metadata.uid or "",
                },
            )
            for item in due
        )
    )
    for outcome in taken:
        _record(outcome, results, results_list, dry_run, retention, secret_values)

    # Metric phases, with `terminating` as it stood before this assessment (Argo); then once
    # more as terminating if a metric has just failed, so the run completes in this reconcile.
    terminating = is_terminating(new, results_list, dry_run=dry_run)
    _assess_metrics(metrics, results, terminating=terminating)
    if not terminating and is_terminating(new, results_list, dry_run=dry_run):
        _assess_metrics(metrics, results, terminating=True)
    for metric in metrics:
        result = results.get(metric.name)
        if result is not None and metric.name in dry_run and result.phase in COMPLETED_PHASES:
            dry_message = dry_run_result_message(metric, result)
            if dry_message is not None:
                result.message = dry_message

    phase, message = run_phase(new, results_list, metrics=metrics, dry_run=dry_run)
    if phase != status.phase:
        status.phase = phase
        status.message = redact(message, secret_values) or None
    status.run_summary, status.dry_run_summary = run_summaries(metrics, results_list, dry_run=dry_run)
    if status.phase in COMPLETED_PHASES:
        status.completed_at = to_rfc3339(now())
        next_at = None
    else:
        next_at = next_reconcile(new, now(), metrics=metrics)
    return _finish(run, new, next_at)


def _in_flight(result: MetricResult | None, due: DueMetric) -> Measurement | None:
    if due.reason != REASON_RESUME or result is None or not result.measurements:
        return None
    return result.measurements[-1]


def _record(
    outcome: _Taken,
    results: dict[str, MetricResult],
    results_list: list[MetricResult],
    dry_run: Collection[str],
    retention: Mapping[str, int],
    secret_values: set[str],
) -> None:
    name = outcome.due.metric.name
    result = results.get(name)
    if result is None:
        result = MetricResult(name=name, phase=PHASE_RUNNING, dry_run=True if name in dry_run else None)
        results_list.append(result)
    elif outcome.due.reason == REASON_RESUME and result.measurements:
        result.measurements = result.measurements[:-1]  # replaced by its outcome below
    if outcome.metadata:
        metadata = dict(result.metadata or {})
        metadata.update({k: redact(v, secret_values) for k, v in outcome.metadata.items()})
        result.metadata = metadata
    measurement = _redact_measurement(outcome.measurement, secret_values)
    updated = record_measurement(result, measurement, retention.get(name, DEFAULT_MEASUREMENT_RETENTION))
    results[name] = updated
    for index, existing in enumerate(results_list):
        if existing.name == name:
            results_list[index] = updated
