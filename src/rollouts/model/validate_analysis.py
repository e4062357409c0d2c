"""Argo's checks of AnalysisTemplates, ClusterAnalysisTemplates and AnalysisRuns (reference b.3).

Pure functions (no I/O), used by `lint` and by the controller before it runs an analysis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rollouts.core.durations import DurationError, parse_go_duration
from rollouts.model.analysis import AnalysisRun, AnalysisTemplate, Argument, ClusterAnalysisTemplate, Metric
from rollouts.model.findings import (
    PLACEHOLDER,
    Findings,
    and_list,
    closest,
    metric_rules,
    unknown_fields,
    validate_metric_rule,
)
from rollouts.model.manifests import Finding
from rollouts.model.rollout import DryRun, MeasurementRetention

SUPPORTED_PROVIDERS_ORDERED = ("prometheus", "web", "job")
SUPPORTED_PROVIDERS = frozenset(SUPPORTED_PROVIDERS_ORDERED)
ARGO_PROVIDERS = (
    "prometheus",
    "web",
    "job",
    "datadog",
    "newRelic",
    "wavefront",
    "kayenta",
    "cloudWatch",
    "graphite",
    "influxdb",
    "skywalking",
    "plugin",
)


def validate_analysis_template(t: AnalysisTemplate | ClusterAnalysisTemplate) -> list[Finding]:
    """The checks Argo runs on a template's metrics (reference b.3), and on its args and rules."""
    out = Findings(t.kind, t.metadata.name)
    spec = t.spec
    metrics = spec.metrics or []
    if not metrics and not spec.templates:
        out.error("spec.metrics", "at least one metric is required (or reference other templates under spec.templates)")
    _validate_metrics(out, metrics)
    _validate_args(out, spec.args or [], require_values=False)
    for i, ref in enumerate(spec.templates or []):
        if not ref.template_name.strip():
            out.error(f"spec.templates[{i}].templateName", "empty (name an AnalysisTemplate)")
    _validate_specmetric_rules(out, spec.dry_run, spec.measurement_retention, metrics, check_matches=not spec.templates)
    out.items.extend(unknown_fields(t, kind=t.kind, name=t.metadata.name))
    return out.items


def validate_analysis_run(run: AnalysisRun) -> list[Finding]:
    """A run's metrics as for a template; its arguments must all have values."""
    out = Findings("AnalysisRun", run.metadata.name)
    if not run.spec.metrics:
        out.error("spec.metrics", "at least one metric is required")
    _validate_metrics(out, run.spec.metrics)
    _validate_args(out, run.spec.args or [], require_values=True)
    _validate_specmetric_rules(
        out, run.spec.dry_run, run.spec.measurement_retention, run.spec.metrics, check_matches=True
    )
    out.items.extend(unknown_fields(run, kind="AnalysisRun", name=run.metadata.name))
    return out.items


def _validate_metrics(out: Findings, metrics: Sequence[Metric]) -> None:
    seen: dict[str, int] = {}
    for i, metric in enumerate(metrics):
        path = f"spec.metrics[{i}]"
        if not metric.name:
            out.error(f"{path}.name", "empty (give the metric a name)")
        elif metric.name in seen:
            out.error(
                f"{path}.name",
                f"duplicate metric name {metric.name!r} (also spec.metrics[{seen[metric.name]}]); names must be unique",
            )
        else:
            seen[metric.name] = i
        _validate_metric(out, path, metric)


def _validate_metric(out: Findings, path: str, metric: Metric) -> None:
    _validate_provider(out, f"{path}.provider", metric.provider)
    for key, value in (("interval", metric.interval), ("initialDelay", metric.initial_delay)):
        if value is None or value == "" or PLACEHOLDER.search(value):
            continue
        try:
            seconds = parse_go_duration(value)
        except DurationError as exc:
            out.error(f"{path}.{key}", str(exc))
            continue
        if seconds < 0:
            out.error(f"{path}.{key}", f"{value!r} is negative (use e.g. '30s')")
    conditions = (("successCondition", metric.success_condition), ("failureCondition", metric.failure_condition))
    for key, condition in conditions:
        if condition is not None and not condition.strip():
            out.error(f"{path}.{key}", "empty (write a condition such as result[0] < 0.01, or remove the field)")

    count = int_field(out, f"{path}.count", metric.count)
    failure_limit = int_field(out, f"{path}.failureLimit", metric.failure_limit)
    inconclusive_limit = int_field(out, f"{path}.inconclusiveLimit", metric.inconclusive_limit)
    error_limit = int_field(out, f"{path}.consecutiveErrorLimit", metric.consecutive_error_limit)
    success_limit = int_field(out, f"{path}.consecutiveSuccessLimit", metric.consecutive_success_limit)
    if count is not None and count < 0:
        out.error(f"{path}.count", f"{count} is negative (use 0 or more)")
    if failure_limit is not None and failure_limit < -1:
        out.error(f"{path}.failureLimit", f"{failure_limit} is below -1 (use 0 or more, or -1 to never fail)")
    if inconclusive_limit is not None and inconclusive_limit < 0:
        out.error(f"{path}.inconclusiveLimit", f"{inconclusive_limit} is negative (use 0 or more)")
    if error_limit is not None and error_limit < 0:
        out.error(f"{path}.consecutiveErrorLimit", f"{error_limit} is negative (use 0 or more)")
    if success_limit is not None and success_limit < 0:
        out.error(f"{path}.consecutiveSuccessLimit", f"{success_limit} is negative (use 0 or more)")
    if failure_limit == -1 and (metric.consecutive_success_limit is None or success_limit == 0):
        out.error(
            f"{path}.failureLimit",
            "-1 turns off failing, so the metric needs consecutiveSuccessLimit above 0 to decide (set one)",
        )
    if count is not None and count > 0:
        fl = failure_limit if failure_limit is not None else 0
        sl = success_limit if success_limit is not None else 0
        if fl >= 0 and sl >= 0 and count < fl + sl:
            out.error(
                f"{path}.count",
                f"{count} is less than failureLimit + consecutiveSuccessLimit ({fl} + {sl}); raise count",
            )
        elif sl >= 0 and count < sl:
            out.error(f"{path}.count", f"{count} is less than consecutiveSuccessLimit ({sl}); raise count")
        il = inconclusive_limit if inconclusive_limit is not None else 0
        if count < il:
            out.error(f"{path}.count", f"{count} is less than inconclusiveLimit ({il}); raise count")
    if count is not None and count > 1 and not metric.interval:
        out.error(f"{path}.count", f"{count} measurements need an interval between them (add interval: 30s)")


def int_field(out: Findings, path: str, value: int | str | None) -> int | None:
    """The integer in an int-or-string field; None when unset, a placeholder, or invalid."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if PLACEHOLDER.search(text):
        return None
    out.error(path, f"{value!r} is not an integer (use a number, or an {{{{args.name}}}} placeholder)")
    return None


def _validate_provider(out: Findings, path: str, provider: dict[str, Any]) -> None:
    keys = list(provider)
    if not keys:
        out.error(path, f"no provider set (add one of {', '.join(SUPPORTED_PROVIDERS_ORDERED)})")
        return
    unknown = [k for k in keys if k not in ARGO_PROVIDERS]
    for key in unknown:
        hint = closest(key, ARGO_PROVIDERS)
        fix = f"did you mean {hint}?" if hint else f"use one of {', '.join(ARGO_PROVIDERS)}"
        out.error(f"{path}.{key}", f"unknown metric provider ({fix})")
    if len(keys) > 1:
        out.error(path, f"sets {and_list(keys)}; a metric uses exactly one provider")
    for key in keys:
        if key in unknown:
            continue
        block = provider[key]
        if not isinstance(block, dict):
            out.error(f"{path}.{key}", "expected a mapping with the provider's settings")
            continue
        if key not in SUPPORTED_PROVIDERS:
            out.warning(
                f"{path}.{key}",
                f"the {key} metric provider is not supported by rollouts yet; its measurements will end in Error",
            )
        elif key == "prometheus":
            if not isinstance(block.get("query"), str) or not block["query"].strip():
                out.error(f"{path}.prometheus.query", "missing (write the PromQL query to run)")
            timeout = block.get("timeout")
            if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
                out.error(f"{path}.prometheus.timeout", f"{timeout!r} is not a whole number of seconds >= 0")
        elif key == "web":
            if not isinstance(block.get("url"), str) or not block["url"].strip():
                out.error(f"{path}.web.url", "missing (the URL to query)")
            method = block.get("method")
            if method is not None and method not in ("GET", "POST", "PUT"):
                out.error(f"{path}.web.method", f"{method!r} is not supported (use GET, POST or PUT)")
            if block.get("body") is not None and block.get("jsonBody") is not None:
                out.error(f"{path}.web", "sets both body and jsonBody; set one")
            if (block.get("body") is not None or block.get("jsonBody") is not None) and method in (None, "GET"):
                out.error(f"{path}.web.method", "a body needs method POST or PUT")
        elif key == "job" and not isinstance(block.get("spec"), dict):
            out.error(f"{path}.job.spec", "missing (the Job spec to run for each measurement)")


def _validate_args(out: Findings, args: Sequence[Argument], *, require_values: bool) -> None:
    seen: dict[str, int] = {}
    for i, arg in enumerate(args):
        path = f"spec.args[{i}]"
        if not arg.name:
            out.error(f"{path}.name", "empty (give the argument a name)")
        elif arg.name in seen:
            out.error(f"{path}.name", f"duplicate argument {arg.name!r} (also spec.args[{seen[arg.name]}])")
        else:
            seen[arg.name] = i
        value_from = arg.value_from
        if arg.value is not None and value_from is not None:
            out.error(path, "sets both value and valueFrom; set one")
        if value_from is not None:
            sources = [s for s in (value_from.secret_key_ref, value_from.field_ref) if s is not None]
            if len(sources) != 1:
                out.error(f"{path}.valueFrom", "set exactly one of secretKeyRef or fieldRef")
        if require_values and arg.value is None and value_from is None:
            out.error(path, f"args.{arg.name} was not resolved (give it a value)")


def _validate_specmetric_rules(
    out: Findings,
    dry_run: Sequence[DryRun] | None,
    retention: Sequence[MeasurementRetention] | None,
    metrics: Sequence[Metric],
    *,
    check_matches: bool,
) -> None:
    names = [m.name for m in metrics]
    for rule_path, metric_name in metric_rules(dry_run, retention):
        path = f"spec.{rule_path}"
        before = len(out.items)
        validate_metric_rule(out, path, metric_name)
        if len(out.items) != before or not check_matches:
            continue
        pattern = re.compile(metric_name)
        if not any(pattern.search(n) for n in names):
            out.error(f"{path}.metricName", f"{metric_name!r} matches no metric ({', '.join(names)})")
    for i, rule in enumerate(retention or []):
        if rule.limit < 0:
            out.error(f"spec.measurementRetention[{i}].limit", f"{rule.limit} is negative (use 0 or more)")
