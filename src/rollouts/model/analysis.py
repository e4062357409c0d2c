"""argoproj.io/v1alpha1 AnalysisTemplate, ClusterAnalysisTemplate and AnalysisRun.

Provider blocks are kept as free JSON (`dict`) keyed by provider kind: the analysis engine
hands the block to the provider after `{{args.*}}` substitution, which works on JSON text.
"""

from __future__ import annotations

from typing import Any, Literal

from rollouts.model.base import Model
from rollouts.model.meta import ObjectMeta
from rollouts.model.rollout import AnalysisTemplateRef, DryRun, MeasurementRetention

IntOrString = int | str

PHASE_PENDING = "Pending"
PHASE_RUNNING = "Running"
PHASE_SUCCESSFUL = "Successful"
PHASE_FAILED = "Failed"
PHASE_ERROR = "Error"
PHASE_INCONCLUSIVE = "Inconclusive"
COMPLETED_PHASES = frozenset({PHASE_SUCCESSFUL, PHASE_FAILED, PHASE_ERROR, PHASE_INCONCLUSIVE})


class SecretKeyRef(Model):
    name: str
    key: str


class ArgFieldRef(Model):
    field_path: str


class ValueFrom(Model):
    secret_key_ref: SecretKeyRef | None = None
    field_ref: ArgFieldRef | None = None


class Argument(Model):
    name: str
    value: str | None = None
    value_from: ValueFrom | None = None


class Metric(Model):
    name: str
    interval: str | None = None
    initial_delay: str | None = None
    count: IntOrString | None = None
    success_condition: str | None = None
    failure_condition: str | None = None
    failure_limit: IntOrString | None = None
    inconclusive_limit: IntOrString | None = None
    consecutive_error_limit: IntOrString | None = None
    consecutive_success_limit: IntOrString | None = None
    provider: dict[str, Any]


class AnalysisTemplateSpec(Model):
    metrics: list[Metric] | None = None
    args: list[Argument] | None = None
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None
    templates: list[AnalysisTemplateRef] | None = None


class AnalysisTemplate(Model):
    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["AnalysisTemplate"] = "AnalysisTemplate"
    metadata: ObjectMeta
    spec: AnalysisTemplateSpec


class ClusterAnalysisTemplate(Model):
    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["ClusterAnalysisTemplate"] = "ClusterAnalysisTemplate"
    metadata: ObjectMeta
    spec: AnalysisTemplateSpec


class TTLStrategy(Model):
    seconds_after_completion: int | None = None
    seconds_after_success: int | None = None
    seconds_after_failure: int | None = None


class AnalysisRunSpec(Model):
    metrics: list[Metric]
    args: list[Argument] | None = None
    terminate: bool | None = None
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None
    ttl_strategy: TTLStrategy | None = None


class Measurement(Model):
    phase: str
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    value: str | None = None
    metadata: dict[str, str] | None = None
    resume_at: str | None = None


class MetricResult(Model):
    name: str
    phase: str
    measurements: list[Measurement] | None = None
    message: str | None = None
    count: int | None = None
    successful: int | None = None
    failed: int | None = None
    inconclusive: int | None = None
    error: int | None = None
    consecutive_error: int | None = None
    consecutive_success: int | None = None
    dry_run: bool | None = None
    metadata: dict[str, str] | None = None


class RunSummary(Model):
    count: int | None = None
    successful: int | None = None
    failed: int | None = None
    inconclusive: int | None = None
    error: int | None = None


class AnalysisRunStatus(Model):
    phase: str | None = None
    message: str | None = None
    metric_results: list[MetricResult] | None = None
    started_at: str | None = None
    completed_at: str | None = None
    run_summary: RunSummary | None = None
    dry_run_summary: RunSummary | None = None


class AnalysisRun(Model):
    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["AnalysisRun"] = "AnalysisRun"
    metadata: ObjectMeta
    spec: AnalysisRunSpec
    status: AnalysisRunStatus | None = None
