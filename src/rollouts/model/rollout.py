"""argoproj.io/v1alpha1 Rollout: spec and status, field for field with Argo Rollouts.

Unset fields are None; `rollouts.core.defaults` applies Argo's defaults where they are read.
Fields for features our platforms cannot run yet (e.g. `trafficRouting.istio`, experiment
steps) are still modelled (or kept as free JSON) so that lint accepts every Argo manifest.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rollouts.model.base import Model
from rollouts.model.meta import LabelSelector, ObjectMeta
from rollouts.model.pod import PodTemplateSpec

API_VERSION = "argoproj.io/v1alpha1"
IntOrString = int | str


# --- analysis references (shared by steps, background analysis and blue/green) ---------------


class AnalysisTemplateRef(Model):
    template_name: str
    cluster_scope: bool | None = None


class FieldRef(Model):
    field_path: str


class RolloutArgumentValueFrom(Model):
    pod_template_hash_value: Literal["Stable", "Latest"] | None = None
    field_ref: FieldRef | None = None


class RolloutAnalysisArgument(Model):
    name: str
    value: str | None = None
    value_from: RolloutArgumentValueFrom | None = None


class DryRun(Model):
    metric_name: str


class MeasurementRetention(Model):
    metric_name: str
    limit: int


class AnalysisRunMetadata(Model):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class RolloutAnalysis(Model):
    templates: list[AnalysisTemplateRef] | None = None
    args: list[RolloutAnalysisArgument] | None = None
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None
    analysis_run_metadata: AnalysisRunMetadata | None = None


class RolloutAnalysisBackground(RolloutAnalysis):
    starting_step: int | None = None


# --- canary ----------------------------------------------------------------------------------


class RolloutPause(Model):
    duration: IntOrString | None = None


class SetCanaryScale(Model):
    weight: int | None = None
    replicas: int | None = None
    match_traffic_weight: bool | None = None


class StringMatch(Model):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class HeaderRoutingMatch(Model):
    header_name: str
    header_value: StringMatch


class SetHeaderRoute(Model):
    name: str | None = None
    match: list[HeaderRoutingMatch] | None = None


class SetMirrorRoute(Model):
    name: str
    percentage: int | None = None
    match: list[dict[str, Any]] | None = None


class CanaryStep(Model):
    set_weight: int | None = None
    pause: RolloutPause | None = None
    analysis: RolloutAnalysis | None = None
    experiment: dict[str, Any] | None = None
    set_canary_scale: SetCanaryScale | None = None
    set_header_route: SetHeaderRoute | None = None
    set_mirror_route: SetMirrorRoute | None = None
    plugin: dict[str, Any] | None = None

    def kinds(self) -> list[str]:
        """The step kinds set on this step, by their manifest names (exactly one is valid)."""
        return [alias for field, alias in _STEP_KINDS.items() if getattr(self, field) is not None]


_STEP_KINDS = {
    "set_weight": "setWeight",
    "pause": "pause",
    "analysis": "analysis",
    "experiment": "experiment",
    "set_canary_scale": "setCanaryScale",
    "set_header_route": "setHeaderRoute",
    "set_mirror_route": "setMirrorRoute",
    "plugin": "plugin",
}


class ManagedRoute(Model):
    name: str


class NginxTrafficRouting(Model):
    stable_ingress: str | None = None
    stable_ingresses: list[str] | None = None
    annotation_prefix: str | None = None
    additional_ingress_annotations: dict[str, str] | None = None
    canary_ingress_annotations: dict[str, str] | None = None


class TrafficRouting(Model):
    """`canary.trafficRouting`. Routers other than nginx are kept as free JSON."""

    max_traffic_weight: int | None = None
    managed_routes: list[ManagedRoute] | None = None
    nginx: NginxTrafficRouting | None = None
    istio: dict[str, Any] | None = None
    alb: dict[str, Any] | None = None
    smi: dict[str, Any] | None = None
    ambassador: dict[str, Any] | None = None
    app_mesh: dict[str, Any] | None = None
    traefik: dict[str, Any] | None = None
    apisix: dict[str, Any] | None = None
    plugins: dict[str, Any] | None = None

    def routers(self) -> list[str]:
        names = ["nginx", "istio", "alb", "smi", "ambassador", "appMesh", "traefik", "apisix", "plugins"]
        fields = ["nginx", "istio", "alb", "smi", "ambassador", "app_mesh", "traefik", "apisix", "plugins"]
        return [n for n, f in zip(names, fields, strict=True) if getattr(self, f) is not None]


class PodMetadata(Model):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class ReplicaProgressThreshold(Model):
    type: str
    value: int


class CanaryStrategy(Model):
    canary_service: str | None = None
    stable_service: str | None = None
    steps: list[CanaryStep] | None = None
    max_surge: IntOrString | None = None
    max_unavailable: IntOrString | None = None
    traffic_routing: TrafficRouting | None = None
    analysis: RolloutAnalysisBackground | None = None
    anti_affinity: dict[str, Any] | None = None
    canary_metadata: PodMetadata | None = None
    stable_metadata: PodMetadata | None = None
    scale_down_delay_seconds: int | None = None
    scale_down_delay_revision_limit: int | None = None
    abort_scale_down_delay_seconds: int | None = None
    dynamic_stable_scale: bool | None = None
    ping_pong: dict[str, Any] | None = None
    min_pods_per_replica_set: int | None = None
    replica_progress_threshold: ReplicaProgressThreshold | None = None


# --- blue/green ------------------------------------------------------------------------------


class BlueGreenStrategy(Model):
    active_service: str = ""
    preview_service: str | None = None
    preview_replica_count: int | None = None
    auto_promotion_enabled: bool | None = None
    auto_promotion_seconds: int | None = None
    max_unavailable: IntOrString | None = None
    scale_down_delay_seconds: int | None = None
    scale_down_delay_revision_limit: int | None = None
    abort_scale_down_delay_seconds: int | None = None
    pre_promotion_analysis: RolloutAnalysis | None = None
    post_promotion_analysis: RolloutAnalysis | None = None
    anti_affinity: dict[str, Any] | None = None
    preview_metadata: PodMetadata | None = None
    active_metadata: PodMetadata | None = None


class RolloutStrategy(Model):
    canary: CanaryStrategy | None = None
    blue_green: BlueGreenStrategy | None = None


class RollbackWindow(Model):
    revisions: int | None = None


class RolloutAnalysisHistory(Model):
    successful_run_history_limit: int | None = None
    unsuccessful_run_history_limit: int | None = None


class RolloutSpec(Model):
    replicas: int | None = None
    selector: LabelSelector | None = None
    template: PodTemplateSpec | None = None
    workload_ref: dict[str, Any] | None = None
    min_ready_seconds: int | None = None
    revision_history_limit: int | None = None
    paused: bool | None = None
    progress_deadline_seconds: int | None = None
    progress_deadline_abort: bool | None = None
    restart_at: str | None = None
    rollback_window: RollbackWindow | None = None
    strategy: RolloutStrategy = Field(default_factory=RolloutStrategy)
    analysis: RolloutAnalysisHistory | None = None


# --- status ----------------------------------------------------------------------------------


class PauseCondition(Model):
    reason: str
    start_time: str


class Condition(Model):
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_update_time: str | None = None
    last_transition_time: str | None = None


class RolloutAnalysisRunStatus(Model):
    name: str
    status: str
    message: str | None = None


class WeightDestination(Model):
    weight: int
    service_name: str | None = None
    pod_template_hash: str | None = None


class TrafficWeights(Model):
    canary: WeightDestination
    stable: WeightDestination
    additional: list[WeightDestination] | None = None
    verified: bool | None = None


class CanaryStatus(Model):
    current_step_analysis_run_status: RolloutAnalysisRunStatus | None = None
    current_background_analysis_run_status: RolloutAnalysisRunStatus | None = None
    current_experiment: str | None = None
    weights: TrafficWeights | None = None
    stable_ping_pong: str | None = None


class BlueGreenStatus(Model):
    preview_selector: str | None = None
    active_selector: str | None = None
    scale_up_preview_check_point: bool | None = None
    pre_promotion_analysis_run_status: RolloutAnalysisRunStatus | None = None
    post_promotion_analysis_run_status: RolloutAnalysisRunStatus | None = None


class RolloutDuration(Model):
    rollout_started_at: str | None = None
    manual_pause_started_at: str | None = None
    total_manual_pause_duration_seconds: float | None = None
    finished_at: str | None = None
    completion_status: str | None = None


class RolloutStatus(Model):
    abort: bool | None = None
    aborted_at: str | None = None
    pause_conditions: list[PauseCondition] | None = None
    controller_pause: bool | None = None
    current_pod_hash: str | None = None
    current_step_hash: str | None = None
    current_step_index: int | None = None
    stable_rs: str | None = Field(default=None, alias="stableRS")
    replicas: int | None = None
    updated_replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    hpa_replicas: int | None = Field(default=None, alias="HPAReplicas")
    selector: str | None = None
    collision_count: int | None = None
    observed_generation: str | None = None
    conditions: list[Condition] | None = None
    phase: str | None = None
    message: str | None = None
    promote_full: bool | None = None
    restarted_at: str | None = None
    canary: CanaryStatus | None = None
    blue_green: BlueGreenStatus | None = None
    duration: RolloutDuration | None = None


class Rollout(Model):
    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["Rollout"] = "Rollout"
    metadata: ObjectMeta
    spec: RolloutSpec
    status: RolloutStatus | None = None
