"""Argo's checks of a Rollout against the objects it names, where they are at hand.

Services must select labels the pod template carries; the analysis templates of one step
must merge. Pure functions: `lint` passes the objects of a file, the controller those of the
store.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from rollouts.model.analysis import AnalysisTemplate, Argument, ClusterAnalysisTemplate, Metric
from rollouts.model.findings import Findings, metric_rules
from rollouts.model.manifests import Finding
from rollouts.model.rollout import Rollout, RolloutAnalysis
from rollouts.model.service import Service
from rollouts.model.validation import POD_TEMPLATE_HASH_LABEL, analysis_blocks, service_references

_ARG_PLACEHOLDER = re.compile(r"^\{\{\s*args\.([^\s}]+)\s*\}\}$")


def validate_references(
    rollout: Rollout,
    *,
    services: Mapping[str, Service],
    templates: Mapping[str, AnalysisTemplate],
    cluster_templates: Mapping[str, ClusterAnalysisTemplate],
) -> list[Finding]:
    """Argo's checks of a rollout against the objects it names, where they are at hand.

    Services must select only labels the pod template carries (apart from the pod-template
    hash the controller adds); the templates of one analysis must merge (unique metric names,
    agreeing argument values, every argument resolved) and, outside background analysis, must
    not run forever (an `interval` without a `count`).
    """
    out = Findings("Rollout", rollout.metadata.name)
    template = rollout.spec.template
    labels = (template.metadata.labels if template and template.metadata else None) or {}
    for path, name in service_references(rollout):
        service = services.get(name)
        if service is None or service.spec is None or rollout.spec.workload_ref is not None:
            continue
        role_labels = _rolelabels_text(rollout, path)
        for key, value in sorted((service.spec.selector or {}).items()):
            if key == POD_TEMPLATE_HASH_LABEL:
                continue
            if labels.get(key) != value and role_labels.get(key) != value:
                out.error(
                    path,
                    f'service "{name}" selects {key}={value}, which the pod template labels do not carry, '
                    "so it would reach no pod of this rollout (fix the Service selector or the template labels)",
                )
    for path, analysis in analysis_blocks(rollout):
        background = path == "spec.strategy.canary.analysis"
        _check_analysis_templates(out, path, analysis, templates, cluster_templates, background=background)
    return out.items


def _rolelabels_text(rollout: Rollout, path: str) -> dict[str, str]:
    canary, blue_green = rollout.spec.strategy.canary, rollout.spec.strategy.blue_green
    metadata = None
    if canary is not None and path.endswith("canaryService"):
        metadata = canary.canary_metadata
    elif canary is not None and path.endswith("stableService"):
        metadata = canary.stable_metadata
    elif blue_green is not None and path.endswith("activeService"):
        metadata = blue_green.active_metadata
    elif blue_green is not None and path.endswith("previewService"):
        metadata = blue_green.preview_metadata
    return (metadata.labels if metadata is not None else None) or {}


def _check_analysis_templates(
    out: Findings,
    path: str,
    analysis: RolloutAnalysis,
    templates: Mapping[str, AnalysisTemplate],
    cluster_templates: Mapping[str, ClusterAnalysisTemplate],
    *,
    background: bool,
) -> None:
    resolved = list(_flatten(analysis.templates or [], templates, cluster_templates))
    if not resolved:
        return
    metric_owner: dict[str, str] = {}
    metrics: list[tuple[str, Metric]] = []
    declared: dict[str, list[tuple[str, Argument]]] = {}
    for label, tmpl in resolved:
        for metric in tmpl.spec.metrics or []:
            if metric.name in metric_owner:
                out.error(
                    path,
                    f'metric "{metric.name}" is defined in both {metric_owner[metric.name]} and {label}; '
                    "metrics of templates that run together need unique names",
                )
            else:
                metric_owner[metric.name] = label
            metrics.append((label, metric))
        for arg in tmpl.spec.args or []:
            declared.setdefault(arg.name, []).append((label, arg))
    passed = {arg.name: arg for arg in analysis.args or []}
    values: dict[str, str] = {}
    for name, declarations in declared.items():
        with_value = [(label, arg.value) for label, arg in declarations if arg.value is not None]
        distinct = list(dict.fromkeys(value for _, value in with_value))
        if name not in passed and len(distinct) > 1:
            first_label = with_value[0][0]
            other_label = next(label for label, value in with_value if value != distinct[0])
            out.error(
                path,
                f'argument "{name}" has the value {distinct[0]!r} in {first_label} and {distinct[1]!r} in '
                f"{other_label}; give it one value, or pass it in {path}.args",
            )
        if distinct:
            values[name] = distinct[0]
        from_elsewhere = any(arg.value_from is not None for _, arg in declarations)
        if name not in passed and not distinct and not from_elsewhere:
            out.error(
                f"{path}.args",
                f"args.{name} was not resolved: {declarations[0][0]} declares it without a value "
                f"(add - name: {name}, value: ... under {path}.args)",
            )
    values.update({name: arg.value for name, arg in passed.items() if arg.value is not None})
    if not background:
        for label, metric in metrics:
            if metric.interval and _count_value(metric.count, values) == 0:
                out.error(
                    path,
                    f'{label} has metric "{metric.name}" which runs indefinitely (an interval without a count); '
                    "set count, or run it as background analysis",
                )
    metric_names = [m.name for _, m in metrics]
    for rule_path, metric_name in metric_rules(analysis.dry_run, analysis.measurement_retention):
        try:
            pattern = re.compile(metric_name)
        except re.error:
            continue  # reported by validate_rollout
        if metric_name and not any(pattern.search(n) for n in metric_names):
            out.error(
                f"{path}.{rule_path}.metricName",
                f"{metric_name!r} matches no metric of the templates ({', '.join(metric_names)})",
            )


def _count_value(count: int | str | None, values: Mapping[str, str]) -> int | None:
    """A metric's count: 0 when unset, None when it is a placeholder that cannot be resolved."""
    if count is None:
        return 0
    if isinstance(count, int):
        return count
    match = _ARG_PLACEHOLDER.match(count.strip())
    text = values.get(match.group(1), "") if match else count
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _flatten(
    refs: Sequence[Any],
    templates: Mapping[str, AnalysisTemplate],
    cluster_templates: Mapping[str, ClusterAnalysisTemplate],
    seen: set[tuple[bool, str]] | None = None,
) -> Iterator[tuple[str, AnalysisTemplate | ClusterAnalysisTemplate]]:
    """(label, template) of every template reachable from `refs`, nested ones included."""
    seen = set() if seen is None else seen
    for ref in refs:
        cluster = bool(ref.cluster_scope)
        key = (cluster, ref.template_name)
        if key in seen:
            continue
        seen.add(key)
        found: AnalysisTemplate | ClusterAnalysisTemplate | None = (
            cluster_templates.get(ref.template_name) if cluster else templates.get(ref.template_name)
        )
        if found is None:
            continue
        label = f'{"cluster analysis template" if cluster else "analysis template"} "{ref.template_name}"'
        yield label, found
        yield from _flatten(found.spec.templates or [], templates, cluster_templates, seen)
