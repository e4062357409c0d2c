"""Argo Rollouts' validation rules for Rollouts and analysis templates, as findings.

Pure functions (no I/O): `lint` calls them on the objects of a file, the controller on the
objects of the store. Errors are what Argo Rollouts refuses (its `validation.go` and the
analysis checks of reference section b.3); warnings are what Argo accepts but we cannot run
yet (the controller marks such a rollout InvalidSpec with the same words) or what is probably
a mistake. A reference to a Service or template that is not known is a warning here (it may be
applied later) and an error, with the same words, when the rollout runs: the controller should
build those words with `service_not_found` / `template_not_found`.

Findings come back with source "-" and document 0; the caller places them (`Finding.at`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from rollouts.core.durations import DurationError, parse_go_duration, parse_pause_duration
from rollouts.model.analysis import (
    AnalysisRun,
    AnalysisRunStatus,
    AnalysisTemplate,
    Argument,
    ClusterAnalysisTemplate,
    Metric,
)
from rollouts.model.base import Model
from rollouts.model.manifests import Finding, Resource
from rollouts.model.meta import LabelSelector, ObjectMeta
from rollouts.model.pod import PodTemplateSpec
from rollouts.model.rollout import (
    BlueGreenStrategy,
    CanaryStep,
    CanaryStrategy,
    DryRun,
    MeasurementRetention,
    Rollout,
    RolloutAnalysis,
    RolloutStatus,
    StringMatch,
)
from rollouts.model.service import Service

# Argo's defaults, as far as validation reads them (kept here: the model layer sits below core).
DEFAULT_MAX_TRAFFIC_WEIGHT = 100
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
POD_TEMPLATE_HASH_LABEL = "rollouts-pod-template-hash"

SUPPORTED_ROUTERS = frozenset({"nginx"})
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
STEP_KINDS = (
    "setWeight",
    "pause",
    "analysis",
    "experiment",
    "setCanaryScale",
    "setHeaderRoute",
    "setMirrorRoute",
    "plugin",
)
INVALID_SPEC_SUFFIX = "the controller will mark this rollout InvalidSpec"

_PERCENT = re.compile(r"^[0-9]+%$")
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}")
_ARG_PLACEHOLDER = re.compile(r"^\{\{\s*args\.([^\s}]+)\s*\}\}$")
_DOWNWARD_API = re.compile(r"^metadata\.(name|namespace|uid|labels|annotations)(\['[^']+'\])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass
class KnownObjects:
    """Names that references may point at: the objects of the file plus those of the store."""

    services: set[str] = field(default_factory=set)
    templates: set[str] = field(default_factory=set)
    cluster_templates: set[str] = field(default_factory=set)

    def union(self, other: KnownObjects | None) -> KnownObjects:
        if other is None:
            return KnownObjects(set(self.services), set(self.templates), set(self.cluster_templates))
        return KnownObjects(
            self.services | other.services,
            self.templates | other.templates,
            self.cluster_templates | other.cluster_templates,
        )


# --- shared words --------------------------------------------------------------------------------


def service_not_found(name: str) -> str:
    return f'service "{name}" not found: apply it before the rollout runs'


def template_not_found(name: str, *, cluster_scope: bool = False) -> str:
    what = "cluster analysis template" if cluster_scope else "analysis template"
    return f'{what} "{name}" not found: apply it before the rollout runs'


def not_supported(feature: str) -> str:
    """The words for an Argo feature we cannot run: a lint warning and the InvalidSpec message."""
    return f"{feature} not supported by rollouts yet; {INVALID_SPEC_SUFFIX}"


class _Findings:
    """Collects findings about one object."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.items: list[Finding] = []

    def error(self, path: str, message: str) -> None:
        self.items.append(Finding("error", "-", 0, self.kind, self.name, path, message))

    def warning(self, path: str, message: str) -> None:
        self.items.append(Finding("warning", "-", 0, self.kind, self.name, path, message))


# --- Rollout -----------------------------------------------------------------------------------


def validate_rollout(rollout: Rollout, *, known: KnownObjects) -> list[Finding]:
    """Every Argo rule for a Rollout, plus warnings for features we cannot run and for
    references to Services and templates that are not in `known`."""
    out = _Findings("Rollout", rollout.metadata.name)
    _validate_spec(out, rollout)
    strategy = rollout.spec.strategy
    if strategy.canary is not None and strategy.blue_green is not None:
        out.error(
            "spec.strategy",
            "sets both canary and blueGreen; a rollout uses exactly one strategy (remove one of them)",
        )
    elif strategy.canary is None and strategy.blue_green is None:
        out.error("spec.strategy", "sets no strategy; add exactly one of canary or blueGreen")
    elif strategy.canary is not None:
        _validate_canary(out, rollout, strategy.canary)
    elif strategy.blue_green is not None:
        _validate_blue_green(out, rollout, strategy.blue_green)
    out.items.extend(unsupported_features(rollout))
    out.items.extend(missing_references(rollout, known))
    out.items.extend(unknown_fields(rollout, kind="Rollout", name=rollout.metadata.name))
    return out.items


def unsupported_features(rollout: Rollout) -> list[Finding]:
    """Warnings for the Argo features in this rollout that our platforms cannot run.

    The controller marks a rollout with any of these InvalidSpec, with the finding's message.
    """
    out = _Findings("Rollout", rollout.metadata.name)
    spec = rollout.spec
    if spec.workload_ref is not None:
        out.warning("spec.workloadRef", not_supported("workloadRef (a pod template taken from another workload) is"))
    canary = spec.strategy.canary
    if canary is not None:
        base = "spec.strategy.canary"
        routing = canary.traffic_routing
        if routing is not None:
            for router in routing.routers():
                if router in SUPPORTED_ROUTERS:
                    continue
                feature = f"the {router} traffic router is"
                if router == "plugins":
                    feature = "traffic routing through plugins is"
                out.warning(f"{base}.trafficRouting.{router}", not_supported(feature))
        for i, step in enumerate(canary.steps or []):
            if step.experiment is not None:
                out.warning(f"{base}.steps[{i}].experiment", not_supported("experiment steps are"))
            if step.plugin is not None:
                out.warning(f"{base}.steps[{i}].plugin", not_supported("step plugins are"))
        if canary.ping_pong is not None:
            out.warning(f"{base}.pingPong", not_supported("pingPong services are"))
        if canary.anti_affinity is not None:
            out.warning(f"{base}.antiAffinity", not_supported("antiAffinity is"))
    blue_green = spec.strategy.blue_green
    if blue_green is not None and blue_green.anti_affinity is not None:
        out.warning("spec.strategy.blueGreen.antiAffinity", not_supported("antiAffinity is"))
    return out.items


def missing_references(rollout: Rollout, known: KnownObjects) -> list[Finding]:
    """Warnings for Services and (cluster) analysis templates the rollout names but `known`
    lacks. The controller reports the same messages as errors when the rollout runs."""
    out = _Findings("Rollout", rollout.metadata.name)
    for path, name in service_references(rollout):
        if name and name not in known.services:
            out.warning(path, service_not_found(name))
    for path, analysis in analysis_blocks(rollout):
        for i, ref in enumerate(analysis.templates or []):
            name = ref.template_name
            if not name:
                continue
            cluster = bool(ref.cluster_scope)
            pool = known.cluster_templates if cluster else known.templates
            if name not in pool:
                out.warning(f"{path}.templates[{i}].templateName", template_not_found(name, cluster_scope=cluster))
    return out.items


def service_references(rollout: Rollout) -> list[tuple[str, str]]:
    """(path, name) of every Service the rollout points at."""
    refs: list[tuple[str, str]] = []
    canary = rollout.spec.strategy.canary
    if canary is not None:
        if canary.canary_service:
            refs.append(("spec.strategy.canary.canaryService", canary.canary_service))
        if canary.stable_service:
            refs.append(("spec.strategy.canary.stableService", canary.stable_service))
        ping_pong = canary.ping_pong or {}
        for key in ("pingService", "pongService"):
            value = ping_pong.get(key)
            if isinstance(value, str) and value:
                refs.append((f"spec.strategy.canary.pingPong.{key}", value))
    blue_green = rollout.spec.strategy.blue_green
    if blue_green is not None:
        if blue_green.active_service:
            refs.append(("spec.strategy.blueGreen.activeService", blue_green.active_service))
        if blue_green.preview_service:
            refs.append(("spec.strategy.blueGreen.previewService", blue_green.preview_service))
    return refs


def analysis_blocks(rollout: Rollout) -> list[tuple[str, RolloutAnalysis]]:
    """(path, analysis) of every analysis the rollout runs: steps, background, pre/post."""
    blocks: list[tuple[str, RolloutAnalysis]] = []
    canary = rollout.spec.strategy.canary
    if canary is not None:
        for i, step in enumerate(canary.steps or []):
            if step.analysis is not None:
                blocks.append((f"spec.strategy.canary.steps[{i}].analysis", step.analysis))
        if canary.analysis is not None:
            blocks.append(("spec.strategy.canary.analysis", canary.analysis))
    blue_green = rollout.spec.strategy.blue_green
    if blue_green is not None:
        if blue_green.pre_promotion_analysis is not None:
            blocks.append(("spec.strategy.blueGreen.prePromotionAnalysis", blue_green.pre_promotion_analysis))
        if blue_green.post_promotion_analysis is not None:
            blocks.append(("spec.strategy.blueGreen.postPromotionAnalysis", blue_green.post_promotion_analysis))
    return blocks


def _validate_spec(out: _Findings, rollout: Rollout) -> None:
    spec = rollout.spec
    if spec.replicas is not None and spec.replicas < 0:
        out.error("spec.replicas", f"{spec.replicas} is negative (use 0 or more)")
    _non_negative(out, "spec.minReadySeconds", spec.min_ready_seconds)
    _non_negative(out, "spec.revisionHistoryLimit", spec.revision_history_limit)
    _non_negative(out, "spec.progressDeadlineSeconds", spec.progress_deadline_seconds)
    deadline = (
        DEFAULT_PROGRESS_DEADLINE_SECONDS if spec.progress_deadline_seconds is None else spec.progress_deadline_seconds
    )
    min_ready = spec.min_ready_seconds or 0
    if deadline <= min_ready:
        out.error(
            "spec.progressDeadlineSeconds",
            f"{deadline} must be greater than minReadySeconds ({min_ready}); raise it or lower minReadySeconds",
        )
    if spec.rollback_window is not None:
        _non_negative(out, "spec.rollbackWindow.revisions", spec.rollback_window.revisions)
    if spec.analysis is not None:
        _non_negative(out, "spec.analysis.successfulRunHistoryLimit", spec.analysis.successful_run_history_limit)
        _non_negative(out, "spec.analysis.unsuccessfulRunHistoryLimit", spec.analysis.unsuccessful_run_history_limit)
    if spec.restart_at is not None:
        try:
            datetime.fromisoformat(spec.restart_at.replace("Z", "+00:00"))
        except ValueError:
            out.error("spec.restartAt", f"{spec.restart_at!r} is not a time (use RFC 3339, e.g. 2024-05-01T12:00:00Z)")

    if spec.workload_ref is not None:
        if spec.template is not None and spec.template.spec.containers:
            out.error("spec.template", "must be empty when spec.workloadRef is set (use one or the other)")
        return
    _validate_selector(out, spec.selector, spec.template)
    _validate_template(out, spec.template)


def _validate_selector(out: _Findings, selector: LabelSelector | None, template: PodTemplateSpec | None) -> None:
    if selector is None:
        out.error("spec.selector", "missing (add matchLabels that the pod template's labels carry)")
        return
    if selector.is_empty():
        out.error("spec.selector", "is empty, which would select every pod (add matchLabels)")
        return
    operators = ("In", "NotIn", "Exists", "DoesNotExist")
    for i, req in enumerate(selector.match_expressions or []):
        path = f"spec.selector.matchExpressions[{i}]"
        if req.operator not in operators:
            out.error(f"{path}.operator", f"{req.operator!r} is not an operator (use one of {', '.join(operators)})")
        elif req.operator in ("In", "NotIn") and not req.values:
            out.error(f"{path}.values", f"the {req.operator} operator needs at least one value")
        elif req.operator in ("Exists", "DoesNotExist") and req.values:
            out.error(f"{path}.values", f"must be empty with the {req.operator} operator")
    if any(f.path.startswith("spec.selector.") for f in out.items):
        return  # a broken expression: matching it against the labels says nothing more
    labels = (template.metadata.labels if template is not None and template.metadata is not None else None) or {}
    if template is not None and not selector.matches(labels):
        shown = _labels(labels) if labels else "(none)"
        out.error(
            "spec.selector",
            f"does not match the template labels {shown}; make spec.template.metadata.labels carry "
            f"every selector label ({_selector_text(selector)})",
        )


def _validate_template(out: _Findings, template: PodTemplateSpec | None) -> None:
    if template is None:
        out.error("spec.template", "missing (add a pod template with at least one container)")
        return
    containers = template.spec.containers
    base = "spec.template.spec.containers"
    if not containers:
        out.error(base, "at least one container is required")
    seen: dict[str, int] = {}
    for i, container in enumerate(containers):
        path = f"{base}[{i}]"
        if not container.name:
            out.error(f"{path}.name", "empty (give the container a name)")
        elif not _DNS_LABEL.match(container.name) or len(container.name) > 63:
            out.error(
                f"{path}.name",
                f"{container.name!r} is not a valid container name (lowercase letters, digits and '-', at most 63)",
            )
        elif container.name in seen:
            other = seen[container.name]
            out.error(f"{path}.name", f"duplicate container name {container.name!r} (also {base}[{other}])")
        else:
            seen[container.name] = i
        if not container.image:
            out.error(f"{path}.image", "missing (set the container image)")
        if not container.command:
            out.warning(
                f"{path}.command",
                "not set; the embedded platform runs command + args as a local process, so this pod "
                "cannot start there (fine on Kubernetes, where the image's entrypoint runs)",
            )
    for i, init in enumerate(template.spec.init_containers or []):
        if not init.image:
            out.error(f"spec.template.spec.initContainers[{i}].image", "missing (set the container image)")


def _validate_canary(out: _Findings, rollout: Rollout, canary: CanaryStrategy) -> None:
    base = "spec.strategy.canary"
    routing = canary.traffic_routing
    _validate_surge(out, base, canary.max_surge, canary.max_unavailable)
    if canary.canary_service and canary.stable_service and canary.canary_service == canary.stable_service:
        out.error(
            f"{base}.stableService",
            f'is the same Service as canaryService ("{canary.stable_service}"); use two different Services',
        )
    _validate_ping_pong(out, base, canary)
    if _needs_canary_and_stable_services(canary):
        for key, value in (("canaryService", canary.canary_service), ("stableService", canary.stable_service)):
            if not value:
                role = "canary" if key == "canaryService" else "stable"
                out.error(
                    f"{base}.{key}",
                    f"required with trafficRouting (name the Service that selects the {role} pods)",
                )
    _non_negative(out, f"{base}.scaleDownDelaySeconds", canary.scale_down_delay_seconds)
    _non_negative(out, f"{base}.scaleDownDelayRevisionLimit", canary.scale_down_delay_revision_limit)
    _non_negative(out, f"{base}.abortScaleDownDelaySeconds", canary.abort_scale_down_delay_seconds)
    _non_negative(out, f"{base}.minPodsPerReplicaSet", canary.min_pods_per_replica_set)
    if routing is None:
        if canary.scale_down_delay_seconds is not None:
            out.error(f"{base}.scaleDownDelaySeconds", "only works with trafficRouting (remove it, or add a router)")
        if canary.dynamic_stable_scale:
            out.error(f"{base}.dynamicStableScale", "only works with trafficRouting (remove it, or add a router)")
        if canary.min_pods_per_replica_set is not None:
            out.error(f"{base}.minPodsPerReplicaSet", "only works with trafficRouting (remove it, or add a router)")
        if canary.abort_scale_down_delay_seconds is not None:
            out.warning(f"{base}.abortScaleDownDelaySeconds", "has no effect without trafficRouting")
    else:
        if canary.scale_down_delay_seconds is not None and canary.dynamic_stable_scale:
            out.error(
                f"{base}.dynamicStableScale",
                "cannot be used with scaleDownDelaySeconds (remove one of them)",
            )
        _validate_traffic_routing(out, base, canary)
    threshold = canary.replica_progress_threshold
    if threshold is not None:
        path = f"{base}.replicaProgressThreshold"
        if threshold.type not in ("Percent", "Pods"):
            out.error(f"{path}.type", f"{threshold.type!r} is not a threshold type (use Percent or Pods)")
        elif threshold.type == "Percent" and not 0 <= threshold.value <= 100:
            out.error(f"{path}.value", f"{threshold.value} is not a percentage (use 0 to 100)")
        elif threshold.value < 0:
            out.error(f"{path}.value", f"{threshold.value} is negative (use 0 or more)")
    if canary.anti_affinity is not None:
        _validate_anti_affinity(out, f"{base}.antiAffinity", canary.anti_affinity)
    if canary.analysis is not None:
        _validate_analysis(out, rollout, f"{base}.analysis", canary.analysis)
        _non_negative(out, f"{base}.analysis.startingStep", canary.analysis.starting_step)

    max_weight = DEFAULT_MAX_TRAFFIC_WEIGHT
    if routing is not None and routing.max_traffic_weight is not None and routing.max_traffic_weight > 0:
        max_weight = routing.max_traffic_weight
    route_names = {r.name for r in (routing.managed_routes or [])} if routing is not None else set()
    for i, step in enumerate(canary.steps or []):
        _validate_step(out, rollout, canary, f"{base}.steps[{i}]", step, max_weight, route_names)


def _validate_step(
    out: _Findings,
    rollout: Rollout,
    canary: CanaryStrategy,
    path: str,
    step: CanaryStep,
    max_weight: int,
    route_names: set[str],
) -> None:
    kinds = step.kinds()
    if not kinds:
        out.error(path, f"sets no step kind; set exactly one of {_or_list(STEP_KINDS)}")
    elif len(kinds) > 1:
        out.error(path, f"sets {'both ' if len(kinds) == 2 else ''}{_and_list(kinds)}; a step must set exactly one")
    routing = canary.traffic_routing
    if step.set_weight is not None and not 0 <= step.set_weight <= max_weight:
        out.error(
            f"{path}.setWeight",
            f"{step.set_weight} is not between 0 and {max_weight} (use a weight from 0 to {max_weight})",
        )
    if step.pause is not None and step.pause.duration is not None:
        _validate_pause_duration(out, f"{path}.pause.duration", step.pause.duration)
    if step.set_canary_scale is not None:
        scale = step.set_canary_scale
        scale_path = f"{path}.setCanaryScale"
        chosen = [
            name
            for name, value in (
                ("weight", scale.weight),
                ("replicas", scale.replicas),
                ("matchTrafficWeight", scale.match_traffic_weight or None),
            )
            if value is not None
        ]
        if not chosen:
            out.error(scale_path, "sets none of weight, replicas or matchTrafficWeight: true; set exactly one")
        elif len(chosen) > 1:
            out.error(
                scale_path, f"sets {_and_list(chosen)}; set exactly one of weight, replicas or matchTrafficWeight"
            )
        if scale.weight is not None and not 0 <= scale.weight <= 100:
            out.error(
                f"{scale_path}.weight", f"{scale.weight} is not between 0 and 100 (it is a percentage of replicas)"
            )
        if scale.replicas is not None and scale.replicas < 0:
            out.error(f"{scale_path}.replicas", f"{scale.replicas} is negative (use 0 or more)")
        if routing is None:
            out.error(
                scale_path,
                "needs trafficRouting: without a traffic router the canary's weight is its share of "
                "replicas, so it cannot be scaled separately (add trafficRouting or use setWeight)",
            )
    if step.analysis is not None:
        _validate_analysis(out, rollout, f"{path}.analysis", step.analysis)
    if step.set_header_route is not None:
        route_path = f"{path}.setHeaderRoute"
        if routing is None or not (
            routing.istio is not None or routing.alb is not None or routing.apisix is not None or routing.plugins
        ):
            out.error(route_path, "needs trafficRouting through istio, alb, apisix or plugins")
        else:
            for j, match in enumerate(step.set_header_route.match or []):
                match_path = f"{route_path}.match[{j}].headerValue"
                if routing.alb is not None:
                    if not match.header_value.exact or match.header_value.regex or match.header_value.prefix:
                        out.error(match_path, "the alb router supports exact matches only (set exact)")
                else:
                    _validate_string_match(out, match_path, match.header_value)
        _validate_route_name(out, canary, route_path, step.set_header_route.name, route_names)
    if step.set_mirror_route is not None:
        route_path = f"{path}.setMirrorRoute"
        if routing is None or not (routing.istio is not None or routing.plugins):
            out.error(route_path, "needs trafficRouting through istio or plugins")
        for j, block in enumerate(step.set_mirror_route.match or []):
            for key in ("method", "path"):
                value = block.get(key) if isinstance(block, dict) else None
                if value is not None:
                    parsed = StringMatch.model_validate(value) if isinstance(value, dict) else None
                    _validate_string_match(out, f"{route_path}.match[{j}].{key}", parsed)
        if step.set_mirror_route.percentage is not None and not 0 <= step.set_mirror_route.percentage <= 100:
            out.error(f"{route_path}.percentage", f"{step.set_mirror_route.percentage} is not between 0 and 100")
        _validate_route_name(out, canary, route_path, step.set_mirror_route.name, route_names)
    if step.experiment is not None:
        for j, template in enumerate(step.experiment.get("templates") or []):
            if not isinstance(template, dict) or template.get("weight") is None:
                continue
            weight_path = f"{path}.experiment.templates[{j}].weight"
            if routing is None:
                out.error(weight_path, "needs trafficRouting (remove weight, or add a router)")
            elif routing.alb is None and routing.smi is None and routing.istio is None:
                out.error(weight_path, "is only available with the alb, smi or istio traffic routers")


def _validate_route_name(
    out: _Findings, canary: CanaryStrategy, path: str, name: str | None, route_names: set[str]
) -> None:
    routing = canary.traffic_routing
    if routing is None:
        return
    if routing.managed_routes is None:
        out.error(
            "spec.strategy.canary.trafficRouting.managedRoutes",
            f"missing: {path.rsplit('.', 1)[-1]} steps need their route listed under managedRoutes",
        )
    elif (name or "") not in route_names:
        out.error(
            f"{path}.name",
            f"{name!r} is not in spec.strategy.canary.trafficRouting.managedRoutes (add - name: {name})",
        )


def _validate_string_match(out: _Findings, path: str, match: StringMatch | None) -> None:
    values = [] if match is None else [v for v in (match.exact, match.regex, match.prefix) if v]
    if not values:
        out.error(path, "sets no value; set exactly one of exact, regex or prefix")
    elif len(values) > 1:
        out.error(path, "sets more than one of exact, regex and prefix; set exactly one")


def _validate_traffic_routing(out: _Findings, base: str, canary: CanaryStrategy) -> None:
    routing = canary.traffic_routing
    assert routing is not None
    path = f"{base}.trafficRouting"
    if not routing.routers():
        out.warning(path, "names no traffic router (add nginx: {stableIngress: ...}); weights will not be applied")
    if routing.max_traffic_weight is not None:
        if routing.nginx is None and not routing.plugins:
            out.error(f"{path}.maxTrafficWeight", "only works with the nginx router or plugins (remove it)")
        elif routing.max_traffic_weight < 1:
            out.error(f"{path}.maxTrafficWeight", f"{routing.max_traffic_weight} must be at least 1")
    if routing.nginx is not None:
        single = bool(routing.nginx.stable_ingress)
        multiple = bool(routing.nginx.stable_ingresses)
        if single and multiple:
            out.error(f"{path}.nginx", "sets both stableIngress and stableIngresses; set exactly one")
        elif not single and not multiple:
            out.error(f"{path}.nginx", "sets neither stableIngress nor stableIngresses; name the stable Ingress")
    names = [r.name for r in routing.managed_routes or []]
    for i, name in enumerate(names):
        if names.index(name) != i:
            out.error(f"{path}.managedRoutes[{i}].name", f"duplicate route name {name!r}")


def _needs_canary_and_stable_services(canary: CanaryStrategy) -> bool:
    routing = canary.traffic_routing
    if routing is None:
        return False
    return (
        (routing.alb is not None and canary.ping_pong is None)
        or (routing.istio is not None and not routing.istio.get("destinationRule"))
        or any(
            r is not None
            for r in (routing.smi, routing.apisix, routing.ambassador, routing.nginx, routing.app_mesh, routing.traefik)
        )
    )


def _validate_ping_pong(out: _Findings, base: str, canary: CanaryStrategy) -> None:
    ping_pong = canary.ping_pong
    if ping_pong is None:
        return
    path = f"{base}.pingPong"
    ping, pong = ping_pong.get("pingService"), ping_pong.get("pongService")
    for key, value in (("pingService", ping), ("pongService", pong)):
        if not value:
            out.error(f"{path}.{key}", "required: pingPong needs both pingService and pongService")
    if ping and ping == pong:
        out.error(f"{path}.pongService", f'is the same Service as pingService ("{ping}"); use two different Services')
    routing = canary.traffic_routing
    if routing is not None:
        if routing.alb is None and routing.istio is None and not routing.plugins:
            out.error(path, "only works with the alb or istio traffic routers or plugins")
        if routing.alb is not None and not routing.alb.get("rootService"):
            out.error(f"{base}.trafficRouting.alb.rootService", "required with the alb router and pingPong")


def _validate_anti_affinity(out: _Findings, path: str, anti_affinity: dict[str, Any]) -> None:
    preferred = anti_affinity.get("preferredDuringSchedulingIgnoredDuringExecution")
    required = anti_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if (preferred is None) == (required is None):
        out.error(
            path,
            "set exactly one of preferredDuringSchedulingIgnoredDuringExecution or "
            "requiredDuringSchedulingIgnoredDuringExecution",
        )
    if isinstance(preferred, dict):
        weight = preferred.get("weight")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
            out.error(
                f"{path}.preferredDuringSchedulingIgnoredDuringExecution.weight",
                f"{weight!r} is not between 1 and 100",
            )


def _validate_blue_green(out: _Findings, rollout: Rollout, blue_green: BlueGreenStrategy) -> None:
    base = "spec.strategy.blueGreen"
    if not blue_green.active_service:
        out.error(f"{base}.activeService", "missing (name the Service that receives production traffic)")
    elif blue_green.active_service == blue_green.preview_service:
        out.error(
            f"{base}.previewService",
            f'is the same Service as activeService ("{blue_green.active_service}"); use two different Services',
        )
    _non_negative(out, f"{base}.previewReplicaCount", blue_green.preview_replica_count)
    _non_negative(out, f"{base}.autoPromotionSeconds", blue_green.auto_promotion_seconds)
    _non_negative(out, f"{base}.scaleDownDelaySeconds", blue_green.scale_down_delay_seconds)
    _non_negative(out, f"{base}.abortScaleDownDelaySeconds", blue_green.abort_scale_down_delay_seconds)
    limit = blue_green.scale_down_delay_revision_limit
    _non_negative(out, f"{base}.scaleDownDelayRevisionLimit", limit)
    history = rollout.spec.revision_history_limit
    history = DEFAULT_REVISION_HISTORY_LIMIT if history is None else history
    if limit is not None and limit > history:
        out.error(
            f"{base}.scaleDownDelayRevisionLimit",
            f"{limit} is more than revisionHistoryLimit ({history}); old ReplicaSets beyond the history "
            "limit are deleted anyway (lower it or raise spec.revisionHistoryLimit)",
        )
    if blue_green.auto_promotion_enabled is False and blue_green.auto_promotion_seconds:
        # Argo accepts this and ignores autoPromotionSeconds (docs PR #2388, issue #2000).
        out.warning(
            f"{base}.autoPromotionSeconds",
            "is ignored because autoPromotionEnabled is false: the rollout waits for a manual promote "
            "(remove one of them)",
        )
    if blue_green.max_unavailable is not None:
        _validate_int_or_percent(out, f"{base}.maxUnavailable", blue_green.max_unavailable)
    if blue_green.anti_affinity is not None:
        _validate_anti_affinity(out, f"{base}.antiAffinity", blue_green.anti_affinity)
    if blue_green.pre_promotion_analysis is not None:
        _validate_analysis(out, rollout, f"{base}.prePromotionAnalysis", blue_green.pre_promotion_analysis)
    if blue_green.post_promotion_analysis is not None:
        _validate_analysis(out, rollout, f"{base}.postPromotionAnalysis", blue_green.post_promotion_analysis)


def _validate_analysis(out: _Findings, rollout: Rollout, path: str, analysis: RolloutAnalysis) -> None:
    templates = analysis.templates or []
    if not templates:
        out.error(f"{path}.templates", "at least one template is required (add - templateName: <name>)")
    for i, ref in enumerate(templates):
        if not ref.template_name.strip():
            out.error(f"{path}.templates[{i}].templateName", "empty (name an AnalysisTemplate)")
    names: dict[str, int] = {}
    for i, arg in enumerate(analysis.args or []):
        arg_path = f"{path}.args[{i}]"
        if not arg.name:
            out.error(f"{arg_path}.name", "empty (name the template argument this sets)")
        elif arg.name in names:
            out.error(f"{arg_path}.name", f"duplicate argument {arg.name!r} (also {path}.args[{names[arg.name]}])")
        else:
            names[arg.name] = i
        value_from = arg.value_from
        if value_from is None:
            continue
        if value_from.pod_template_hash_value is not None and value_from.field_ref is not None:
            out.error(f"{arg_path}.valueFrom", "sets both podTemplateHashValue and fieldRef; set exactly one")
        if value_from.field_ref is not None:
            field_path = value_from.field_ref.field_path
            if field_path.startswith("metadata") and not _DOWNWARD_API.match(field_path):
                out.error(
                    f"{arg_path}.valueFrom.fieldRef.fieldPath",
                    f"{field_path!r} is not a metadata field (use metadata.name, metadata.namespace, "
                    "metadata.uid, metadata.labels['key'] or metadata.annotations['key'])",
                )
            elif not field_path:
                out.error(f"{arg_path}.valueFrom.fieldRef.fieldPath", "empty (name a field of the rollout)")
    for rule_path, metric_name in _rules(analysis.dry_run, analysis.measurement_retention):
        _validate_metric_rule(out, f"{path}.{rule_path}", metric_name)
    for i, retention in enumerate(analysis.measurement_retention or []):
        if retention.limit < 0:
            out.error(f"{path}.measurementRetention[{i}].limit", f"{retention.limit} is negative (use 0 or more)")


def _rules(dry_run: Sequence[DryRun] | None, retention: Sequence[MeasurementRetention] | None) -> list[tuple[str, str]]:
    """(`dryRun[i]` / `measurementRetention[i]`, metricName) of each rule."""
    rules = [(f"dryRun[{i}]", rule.metric_name) for i, rule in enumerate(dry_run or [])]
    rules += [(f"measurementRetention[{i}]", rule.metric_name) for i, rule in enumerate(retention or [])]
    return rules


def _validate_metric_rule(out: _Findings, path: str, metric_name: str) -> None:
    if not metric_name:
        out.error(f"{path}.metricName", "empty (name a metric, or use '.*' for all)")
        return
    try:
        re.compile(metric_name)
    except re.error as exc:
        out.error(f"{path}.metricName", f"{metric_name!r} is not a valid regular expression ({exc})")


def _validate_pause_duration(out: _Findings, path: str, value: int | str) -> None:
    try:
        seconds = parse_pause_duration(value)
    except DurationError as exc:
        out.error(path, str(exc))
        return
    if seconds < 0:
        out.error(path, f"{value!r} is negative (use 0 or more, e.g. 30 or '5m')")


def _validate_surge(out: _Findings, base: str, max_surge: int | str | None, max_unavailable: int | str | None) -> None:
    surge = _validate_int_or_percent(out, f"{base}.maxSurge", max_surge) if max_surge is not None else 25
    unavailable = (
        _validate_int_or_percent(out, f"{base}.maxUnavailable", max_unavailable) if max_unavailable is not None else 25
    )
    if surge == 0 and unavailable == 0:
        out.error(
            f"{base}.maxSurge",
            "maxSurge and maxUnavailable are both 0, so no pod could ever be replaced (set one of them above 0)",
        )


def _validate_int_or_percent(out: _Findings, path: str, value: int | str) -> int | None:
    """The number in an int-or-percent field (the percentage for "N%"), or None if invalid."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            out.error(path, f'{value} is negative (use 0 or more, or a percentage like "25%")')
            return None
        return value
    if isinstance(value, str) and _PERCENT.match(value):
        return int(value[:-1])
    out.error(path, f'{value!r} is not an integer or a percentage (use e.g. 1 or "25%")')
    return None


def _non_negative(out: _Findings, path: str, value: int | None) -> None:
    if value is not None and value < 0:
        out.error(path, f"{value} is negative (use 0 or more)")


# --- references with the objects at hand ------------------------------------------------------


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
    out = _Findings("Rollout", rollout.metadata.name)
    template = rollout.spec.template
    labels = (template.metadata.labels if template and template.metadata else None) or {}
    for path, name in service_references(rollout):
        service = services.get(name)
        if service is None or service.spec is None or rollout.spec.workload_ref is not None:
            continue
        role_labels = _role_labels(rollout, path)
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


def _role_labels(rollout: Rollout, path: str) -> dict[str, str]:
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
    out: _Findings,
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
    for rule_path, metric_name in _rules(analysis.dry_run, analysis.measurement_retention):
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


# --- AnalysisTemplate / ClusterAnalysisTemplate / AnalysisRun ------------------------------------


def validate_analysis_template(t: AnalysisTemplate | ClusterAnalysisTemplate) -> list[Finding]:
    """The checks Argo runs on a template's metrics (reference b.3), and on its args and rules."""
    out = _Findings(t.kind, t.metadata.name)
    spec = t.spec
    metrics = spec.metrics or []
    if not metrics and not spec.templates:
        out.error("spec.metrics", "at least one metric is required (or reference other templates under spec.templates)")
    _validate_metrics(out, metrics)
    _validate_args(out, spec.args or [], require_values=False)
    for i, ref in enumerate(spec.templates or []):
        if not ref.template_name.strip():
            out.error(f"spec.templates[{i}].templateName", "empty (name an AnalysisTemplate)")
    _validate_spec_rules(out, spec.dry_run, spec.measurement_retention, metrics, check_matches=not spec.templates)
    out.items.extend(unknown_fields(t, kind=t.kind, name=t.metadata.name))
    return out.items


def validate_analysis_run(run: AnalysisRun) -> list[Finding]:
    """A run's metrics as for a template; its arguments must all have values."""
    out = _Findings("AnalysisRun", run.metadata.name)
    if not run.spec.metrics:
        out.error("spec.metrics", "at least one metric is required")
    _validate_metrics(out, run.spec.metrics)
    _validate_args(out, run.spec.args or [], require_values=True)
    _validate_spec_rules(out, run.spec.dry_run, run.spec.measurement_retention, run.spec.metrics, check_matches=True)
    out.items.extend(unknown_fields(run, kind="AnalysisRun", name=run.metadata.name))
    return out.items


def _validate_metrics(out: _Findings, metrics: Sequence[Metric]) -> None:
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


def _validate_metric(out: _Findings, path: str, metric: Metric) -> None:
    _validate_provider(out, f"{path}.provider", metric.provider)
    for key, value in (("interval", metric.interval), ("initialDelay", metric.initial_delay)):
        if value is None or value == "" or _PLACEHOLDER.search(value):
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

    count = _int_field(out, f"{path}.count", metric.count)
    failure_limit = _int_field(out, f"{path}.failureLimit", metric.failure_limit)
    inconclusive_limit = _int_field(out, f"{path}.inconclusiveLimit", metric.inconclusive_limit)
    error_limit = _int_field(out, f"{path}.consecutiveErrorLimit", metric.consecutive_error_limit)
    success_limit = _int_field(out, f"{path}.consecutiveSuccessLimit", metric.consecutive_success_limit)
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


def _int_field(out: _Findings, path: str, value: int | str | None) -> int | None:
    """The integer in an int-or-string field; None when unset, a placeholder, or invalid."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if _PLACEHOLDER.search(text):
        return None
    out.error(path, f"{value!r} is not an integer (use a number, or an {{{{args.name}}}} placeholder)")
    return None


def _validate_provider(out: _Findings, path: str, provider: dict[str, Any]) -> None:
    keys = list(provider)
    if not keys:
        out.error(path, f"no provider set (add one of {', '.join(SUPPORTED_PROVIDERS_ORDERED)})")
        return
    unknown = [k for k in keys if k not in ARGO_PROVIDERS]
    for key in unknown:
        hint = _closest(key, ARGO_PROVIDERS)
        fix = f"did you mean {hint}?" if hint else f"use one of {', '.join(ARGO_PROVIDERS)}"
        out.error(f"{path}.{key}", f"unknown metric provider ({fix})")
    if len(keys) > 1:
        out.error(path, f"sets {_and_list(keys)}; a metric uses exactly one provider")
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


def _validate_args(out: _Findings, args: Sequence[Argument], *, require_values: bool) -> None:
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


def _validate_spec_rules(
    out: _Findings,
    dry_run: Sequence[DryRun] | None,
    retention: Sequence[MeasurementRetention] | None,
    metrics: Sequence[Metric],
    *,
    check_matches: bool,
) -> None:
    names = [m.name for m in metrics]
    for rule_path, metric_name in _rules(dry_run, retention):
        path = f"spec.{rule_path}"
        before = len(out.items)
        _validate_metric_rule(out, path, metric_name)
        if len(out.items) != before or not check_matches:
            continue
        pattern = re.compile(metric_name)
        if not any(pattern.search(n) for n in names):
            out.error(f"{path}.metricName", f"{metric_name!r} matches no metric ({', '.join(names)})")
    for i, rule in enumerate(retention or []):
        if rule.limit < 0:
            out.error(f"spec.measurementRetention[{i}].limit", f"{rule.limit} is negative (use 0 or more)")


# --- fields that look like typos ------------------------------------------------------------------

_SKIP_UNKNOWN = (ObjectMeta, PodTemplateSpec, RolloutStatus, AnalysisRunStatus)


def unknown_fields(resource: Resource | Model, *, kind: str, name: str) -> list[Finding]:
    """Warnings for unknown fields that look like a misspelt known one (`setweight`).

    Argo's CRDs drop unknown fields, so a misspelt field silently does nothing. Only names
    close to a known field are reported: the models do not cover every Kubernetes field, and
    the pod template and metadata are not checked at all.
    """
    out = _Findings(kind, name)
    _walk_unknown(out, resource, "")
    return out.items


def _walk_unknown(out: _Findings, model: BaseModel, path: str) -> None:
    if isinstance(model, _SKIP_UNKNOWN):
        return
    fields = type(model).model_fields
    known = [info.alias or key for key, info in fields.items()]
    for extra in model.model_extra or {}:
        hint = _closest(extra, known)
        if hint is not None and hint != extra:
            where = f"{path}.{extra}" if path else extra
            out.warning(where, f"unknown field; did you mean {hint}? (Argo Rollouts ignores unknown fields)")
    for key, info in fields.items():
        value = getattr(model, key)
        alias = info.alias or key
        child = f"{path}.{alias}" if path else alias
        _walk_value(out, value, child)


def _walk_value(out: _Findings, value: Any, path: str) -> None:
    if isinstance(value, BaseModel):
        _walk_unknown(out, value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, BaseModel):
                _walk_unknown(out, item, f"{path}[{i}]")


def _closest(word: str, choices: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.85)
    return lowered[match[0]] if match else None


# --- words ------------------------------------------------------------------------------------------


def _and_list(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _or_list(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _selector_text(selector: LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for req in selector.match_expressions or []:
        values = ",".join(req.values or [])
        parts.append(f"{req.key} {req.operator} ({values})" if values else f"{req.key} {req.operator}")
    return ", ".join(parts)
