"""What validation reports, and the small pieces every rule set shares.

`Findings` collects the findings about one object; `unknown_fields` flags misspelt fields;
the word helpers keep messages uniform across the rule modules.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from rollouts.model.analysis import AnalysisRunStatus
from rollouts.model.base import Model
from rollouts.model.manifests import Finding, Resource
from rollouts.model.meta import LabelSelector, ObjectMeta
from rollouts.model.pod import PodTemplateSpec
from rollouts.model.rollout import DryRun, MeasurementRetention, RolloutStatus

PLACEHOLDER = re.compile(r"\{\{.*?\}\}")


class Findings:
    """Collects findings about one object."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.items: list[Finding] = []

    def error(self, path: str, message: str) -> None:
        self.items.append(Finding("error", "-", 0, self.kind, self.name, path, message))

    def warning(self, path: str, message: str) -> None:
        self.items.append(Finding("warning", "-", 0, self.kind, self.name, path, message))


# --- dryRun / measurementRetention rules --------------------------------------------------------


def metric_rules(
    dry_run: Sequence[DryRun] | None, retention: Sequence[MeasurementRetention] | None
) -> list[tuple[str, str]]:
    """(`dryRun[i]` / `measurementRetention[i]`, metricName) of each rule."""
    rules = [(f"dryRun[{i}]", rule.metric_name) for i, rule in enumerate(dry_run or [])]
    rules += [(f"measurementRetention[{i}]", rule.metric_name) for i, rule in enumerate(retention or [])]
    return rules


def validate_metric_rule(out: Findings, path: str, metric_name: str) -> None:
    if not metric_name:
        out.error(f"{path}.metricName", "empty (name a metric, or use '.*' for all)")
        return
    try:
        re.compile(metric_name)
    except re.error as exc:
        out.error(f"{path}.metricName", f"{metric_name!r} is not a valid regular expression ({exc})")


# --- fields that look like typos ------------------------------------------------------------------

_SKIP_UNKNOWN = (ObjectMeta, PodTemplateSpec, RolloutStatus, AnalysisRunStatus)


def unknown_fields(resource: Resource | Model, *, kind: str, name: str) -> list[Finding]:
    """Warnings for unknown fields that look like a misspelt known one (`setweight`).

    Argo's CRDs drop unknown fields, so a misspelt field silently does nothing. Only names
    close to a known field are reported: the models do not cover every Kubernetes field, and
    the pod template and metadata are not checked at all.
    """
    out = Findings(kind, name)
    _walk_unknown(out, resource, "")
    return out.items


def _walk_unknown(out: Findings, model: BaseModel, path: str) -> None:
    if isinstance(model, _SKIP_UNKNOWN):
        return
    fields = type(model).model_fields
    known = [info.alias or key for key, info in fields.items()]
    for extra in model.model_extra or {}:
        hint = closest(extra, known)
        if hint is not None and hint != extra:
            where = f"{path}.{extra}" if path else extra
            out.warning(where, f"unknown field; did you mean {hint}? (Argo Rollouts ignores unknown fields)")
    for key, info in fields.items():
        value = getattr(model, key)
        alias = info.alias or key
        child = f"{path}.{alias}" if path else alias
        _walk_value(out, value, child)


def _walk_value(out: Findings, value: Any, path: str) -> None:
    if isinstance(value, BaseModel):
        _walk_unknown(out, value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, BaseModel):
                _walk_unknown(out, item, f"{path}[{i}]")


def closest(word: str, choices: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.85)
    return lowered[match[0]] if match else None


# --- words ------------------------------------------------------------------------------------------


def and_list(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def or_list(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def selector_text(selector: LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for req in selector.match_expressions or []:
        values = ",".join(req.values or [])
        parts.append(f"{req.key} {req.operator} ({values})" if values else f"{req.key} {req.operator}")
    return ", ".join(parts)
