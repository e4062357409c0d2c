"""Validation of a run's metrics and of its dryRun / measurementRetention rules (b.3).

Why a separate module: Argo validates the metrics of every AnalysisRun each time it is
reconciled, after `{{args.*}}` substitution (so `count: "{{args.count}}"` is checked with its
real value). Any violation ends the run in phase Error with `Analysis spec invalid: <detail>`;
the same functions serve `lint`. Details use Argo's wording (`metrics[0]: count must be >=
failureLimit`) and add the field to change where Argo's text does not say it.

Stricter than Argo, on purpose: an int-or-string field (`count`, the limits) that is not an
integer is refused (Argo silently reads it as 0); a negative `count` and a non-positive
`interval` are refused (they would make the run measure in a tight loop).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rollouts.analysis.assess import DEFAULT_CONSECUTIVE_ERROR_LIMIT
from rollouts.analysis.errors import AnalysisSpecError
from rollouts.core.durations import DurationError, parse_go_duration
from rollouts.model.analysis import IntOrString, Metric
from rollouts.model.rollout import DryRun, MeasurementRetention

__all__ = [
    "DEFAULT_CONSECUTIVE_ERROR_LIMIT",
    "dry_run_metric_names",
    "measurement_retention_limits",
    "metric_int",
    "provider_kinds",
    "validate_metric",
    "validate_metrics",
]


def metric_int(value: IntOrString | None, *, field: str, default: int) -> int:
    """An int-or-string metric field as an int; `default` when unset."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise AnalysisSpecError(f"{field} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    text = value.strip()
    try:
        return int(text, 10)
    except ValueError:
        raise AnalysisSpecError(f"{field} must be an integer, got {value!r}") from None


def provider_kinds(metric: Metric) -> list[str]:
    """The provider kinds set on a metric (a `plugin` block counts once per plugin)."""
    kinds: list[str] = []
    for kind, block in metric.provider.items():
        if block is None:
            continue
        if kind == "plugin" and isinstance(block, dict):
            kinds.extend(f"plugin {name}" for name in block)
        else:
            kinds.append(kind)
    return kinds


def _duration(text: str, *, field: str) -> float:
    try:
        return parse_go_duration(text)
    except DurationError as exc:
        raise AnalysisSpecError(f"invalid {field} string: {exc}") from None


def validate_metric(metric: Metric) -> None:
    """Raise `AnalysisSpecError` (detail without the `metrics[i]` prefix) for a bad metric."""
    count = metric_int(metric.count, field="count", default=0)
    failure_limit = metric_int(metric.failure_limit, field="failureLimit", default=0)
    inconclusive_limit = metric_int(metric.inconclusive_limit, field="inconclusiveLimit", default=0)
    consecutive_error_limit = metric_int(
        metric.consecutive_error_limit, field="consecutiveErrorLimit", default=DEFAULT_CONSECUTIVE_ERROR_LIMIT
    )
    success_limit = metric_int(metric.consecutive_success_limit, field="consecutiveSuccessLimit", default=0)

    if count < 0:
        raise AnalysisSpecError("count must be >= 0 (0 or unset: one measurement, or unbounded with an interval)")
    if failure_limit < -1:
        raise AnalysisSpecError("failureLimit must be >= -1 (-1 disables it)")
    if success_limit < 0:
        raise AnalysisSpecError("consecutiveSuccessLimit must be >= 0 (0 disables it)")
    if failure_limit == -1 and success_limit == 0:
        raise AnalysisSpecError(
            "failureLimit and consecutiveSuccessLimit cannot both be disabled: "
            "set failureLimit >= 0 or consecutiveSuccessLimit > 0"
        )
    if inconclusive_limit < 0:
        raise AnalysisSpecError("inconclusiveLimit must be >= 0")
    if consecutive_error_limit < 0:
        raise AnalysisSpecError("consecutiveErrorLimit must be >= 0")
    if count > 0:
        if failure_limit >= 0 and count < failure_limit + success_limit:
            if success_limit > 0:
                raise AnalysisSpecError("count must be >= failureLimit + consecutiveSuccessLimit")
            raise AnalysisSpecError("count must be >= failureLimit")
        if failure_limit < 0 and count < success_limit:
            raise AnalysisSpecError("count must be >= consecutiveSuccessLimit")
        if count < inconclusive_limit:
            raise AnalysisSpecError("count must be >= inconclusiveLimit")
    if count > 1 and not metric.interval:
        raise AnalysisSpecError("interval must be specified when count > 1")
    if metric.interval and _duration(metric.interval, field="interval") <= 0:
        raise AnalysisSpecError(f"interval must be positive, got {metric.interval!r}")
    if metric.initial_delay:
        _duration(metric.initial_delay, field="initialDelay")

    kinds = provider_kinds(metric)
    if not kinds:
        raise AnalysisSpecError("no provider specified")
    if len(kinds) > 1:
        raise AnalysisSpecError(f"multiple providers specified ({', '.join(kinds)}): keep exactly one")


def validate_metrics(metrics: Sequence[Metric]) -> None:
    """Raise `AnalysisSpecError` with Argo's detail (`metrics[1]: ...`) for the first problem."""
    if not metrics:
        raise AnalysisSpecError("no metrics specified")
    seen: set[str] = set()
    for index, metric in enumerate(metrics):
        if metric.name in seen:
            raise AnalysisSpecError(f"metrics[{index}]: duplicate name '{metric.name}'")
        seen.add(metric.name)
        try:
            validate_metric(metric)
        except AnalysisSpecError as exc:
            raise AnalysisSpecError(f"metrics[{index}]: {exc}") from None


def _compile(pattern: str, *, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise AnalysisSpecError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None


def dry_run_metric_names(rules: Sequence[DryRun] | None, metrics: Sequence[Metric]) -> set[str]:
    """Names of metrics matched by any dryRun rule (unanchored regex); a rule matching none is an error."""
    names: set[str] = set()
    for index, rule in enumerate(rules or []):
        where = f"dryRun[{index}]"
        pattern = _compile(rule.metric_name, where=where)
        matched = [m.name for m in metrics if pattern.search(m.name)]
        if not matched:
            raise AnalysisSpecError(f"{where}: Rule didn't match any metric name(s)")
        names.update(matched)
    return names


def measurement_retention_limits(
    rules: Sequence[MeasurementRetention] | None, metrics: Sequence[Metric]
) -> dict[str, int]:
    """`metric name -> retained measurements` from measurementRetention rules (last match wins).

    Only positive limits are returned (Argo ignores 0 and keeps the default of 10); a rule
    that matches no metric is an error.
    """
    limits: dict[str, int] = {}
    for index, rule in enumerate(rules or []):
        where = f"measurementRetention[{index}]"
        pattern = _compile(rule.metric_name, where=where)
        matched = [m.name for m in metrics if pattern.search(m.name)]
        if not matched:
            raise AnalysisSpecError(f"{where}: Rule didn't match any metric name(s)")
        for name in matched:
            if rule.limit > 0:
                limits[name] = rule.limit
            else:
                limits.pop(name, None)
    return limits
