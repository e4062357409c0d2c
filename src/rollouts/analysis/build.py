"""Build an AnalysisRun from (Cluster)AnalysisTemplates and the caller's args (b.2).

Why: a Rollout step, background analysis or blue/green pre/post-promotion analysis refers to
templates; the run that measures is a flattened copy of them. This is Argo's
`NewAnalysisRunFromTemplates` + `FlattenTemplates` + `MergeArgs`, pure:

- nested `spec.templates` refs are followed through `lookup`, depth first, each template
  taken once (a template reached twice is merged once; a cycle is an error);
- metrics of namespaced templates come first, then those of ClusterAnalysisTemplates (Argo's
  order); a metric name defined twice is an error naming both templates;
- args are merged by name; the same arg with two different values is an error; a declared
  arg without a value is filled by a later template that has one;
- the caller's args (plain values: the Rollout resolved its own `valueFrom` first) override
  args *declared* by the templates; undeclared ones are dropped; an arg left with neither a
  value nor a `valueFrom` is `args.<name> was not resolved`;
- dryRun / measurementRetention rules: the caller's first, then the templates'; the same rule
  twice is an error (Argo's behaviour).

`valueFrom.secretKeyRef` stays in the run: secrets are read when the run is reconciled.
The run is returned without status; the runner starts it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rollouts.analysis.errors import AnalysisBuildError
from rollouts.model.analysis import (
    AnalysisRun,
    AnalysisRunSpec,
    AnalysisTemplate,
    Argument,
    ClusterAnalysisTemplate,
    Metric,
)
from rollouts.model.meta import ObjectMeta, OwnerReference
from rollouts.model.rollout import AnalysisTemplateRef, DryRun, MeasurementRetention

__all__ = ["AnalysisBuildError", "TemplateLookup", "build_analysis_run", "flatten_templates"]

Template = AnalysisTemplate | ClusterAnalysisTemplate
TemplateLookup = Callable[[AnalysisTemplateRef], Template | None]

_NO_LABELS: Mapping[str, str] = {}


def _describe(template: Template) -> str:
    return f'{template.kind} "{template.metadata.name}"'


def _ref_kind(ref: AnalysisTemplateRef) -> str:
    return "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"


def flatten_templates(templates: Sequence[Template], lookup: TemplateLookup) -> list[Template]:
    """Every template reachable from `templates` once: namespaced ones first, then cluster ones.

    Raises `AnalysisBuildError` for a ref that `lookup` cannot find or for a cycle.
    """
    namespaced: list[Template] = []
    cluster: list[Template] = []
    seen: set[tuple[str, str]] = set()

    def visit(template: Template, path: tuple[Template, ...]) -> None:
        key = (template.kind, template.metadata.name)
        if any((t.kind, t.metadata.name) == key for t in path):
            chain = " -> ".join(_describe(t) for t in (*path, template))
            raise AnalysisBuildError(
                f"analysis templates reference each other in a cycle: {chain}: remove one of the spec.templates refs"
            )
        if key in seen:
            return
        seen.add(key)
        (cluster if isinstance(template, ClusterAnalysisTemplate) else namespaced).append(template)
        for ref in template.spec.templates or []:
            child = lookup(ref)
            if child is None:
                raise AnalysisBuildError(
                    f'{_ref_kind(ref)} "{ref.template_name}" not found (referenced by '
                    f"{_describe(template)} in spec.templates): create it or fix the templateName"
                )
            visit(child, (*path, template))

    for template in templates:
        visit(template, ())
    return namespaced + cluster


def _merge_metrics(templates: Sequence[Template]) -> list[Metric]:
    metrics: list[Metric] = []
    origin: dict[str, Template] = {}
    for template in templates:
        for metric in template.spec.metrics or []:
            if metric.name in origin:
                raise AnalysisBuildError(
                    f'two metrics have the same name "{metric.name}": defined in both '
                    f"{_describe(origin[metric.name])} and {_describe(template)}; rename one of them"
                )
            origin[metric.name] = template
            metrics.append(metric.model_copy(deep=True))
    return metrics


def _merge_template_args(templates: Sequence[Template]) -> tuple[list[Argument], dict[str, Template]]:
    merged: list[Argument] = []
    origin: dict[str, Template] = {}
    for template in templates:
        for arg in template.spec.args or []:
            index = next((i for i, prev in enumerate(merged) if prev.name == arg.name), None)
            if index is None:
                merged.append(arg.model_copy(deep=True))
                origin[arg.name] = template
                continue
            prev = merged[index]
            if prev.value is not None and arg.value is not None and prev.value != arg.value:
                raise AnalysisBuildError(
                    f"Argument `{arg.name}` specified multiple times with different values: "
                    f"'{prev.value}' ({_describe(origin[arg.name])}), '{arg.value}' ({_describe(template)}); "
                    "give it the same value in both templates or declare it without a value"
                )
            if prev.value is None:
                merged[index] = arg.model_copy(deep=True)
                origin[arg.name] = template
    return merged, origin


def _apply_caller_args(
    merged: list[Argument], origin: Mapping[str, Template], caller: Sequence[Argument]
) -> list[Argument]:
    by_name = {arg.name: i for i, arg in enumerate(merged)}
    for arg in caller:
        index = by_name.get(arg.name)
        if index is None:
            continue  # not declared by any template: dropped, as in Argo
        if arg.value is not None:
            merged[index] = merged[index].model_copy(update={"value": arg.value, "value_from": None})
        elif arg.value_from is not None:
            merged[index] = merged[index].model_copy(update={"value": None, "value_from": arg.value_from})
    for arg in merged:
        if arg.value is None and arg.value_from is None:
            raise AnalysisBuildError(
                f"args.{arg.name} was not resolved: {_describe(origin[arg.name])} declares it without a "
                "value; pass it in the rollout's analysis args (or give it a value in the template)"
            )
    return merged


def _check_unique_rules(names: Sequence[str], *, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise AnalysisBuildError(
                f"two {what} metric rules have the same name '{name}': keep one "
                "(rules from the rollout and its templates are combined)"
            )
        seen.add(name)


def build_analysis_run(
    *,
    name: str,
    namespace: str,
    templates: Sequence[Template],
    args: Sequence[Argument],
    lookup: TemplateLookup,
    labels: Mapping[str, str] = _NO_LABELS,
    annotations: Mapping[str, str] = _NO_LABELS,
    owner: OwnerReference | None = None,
    dry_run: Sequence[DryRun] = (),
    measurement_retention: Sequence[MeasurementRetention] = (),
) -> AnalysisRun:
    """A new AnalysisRun (no status) merging `templates` (and their nested refs) with `args`."""
    flat = flatten_templates(templates, lookup)
    metrics = _merge_metrics(flat)
    template_args, origin = _merge_template_args(flat)
    run_args = _apply_caller_args(template_args, origin, args)

    template_dry_run = [rule for t in flat for rule in t.spec.dry_run or []]
    _check_unique_rules([r.metric_name for r in template_dry_run], what="Dry-Run")
    all_dry_run = [r.model_copy(deep=True) for r in (*dry_run, *template_dry_run)]
    _check_unique_rules([r.metric_name for r in all_dry_run], what="Dry-Run")

    template_retention = [rule for t in flat for rule in t.spec.measurement_retention or []]
    _check_unique_rules([r.metric_name for r in template_retention], what="Measurement Retention")
    all_retention = [r.model_copy(deep=True) for r in (*measurement_retention, *template_retention)]
    _check_unique_rules([r.metric_name for r in all_retention], what="Measurement Retention")

    metadata = ObjectMeta(
        name=name,
        namespace=namespace,
        labels=dict(labels) or None,
        annotations=dict(annotations) or None,
        owner_references=[owner.model_copy(deep=True)] if owner is not None else None,
    )
    spec = AnalysisRunSpec(
        metrics=metrics,
        args=run_args or None,
        dry_run=all_dry_run or None,
        measurement_retention=all_retention or None,
    )
    return AnalysisRun(metadata=metadata, spec=spec)
