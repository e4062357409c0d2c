"""Argo Rollouts' validation rules for a Rollout's own spec, as findings.

The checks of analysis templates and runs live in `validate_analysis`, those of a rollout
against the Services and templates it names in `validate_references`; what they share in
`findings`.

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

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollouts.core.durations import DurationError, parse_pause_duration
from rollouts.model.findings import (
    Findings,
    and_list,
    labels_text,
    metric_rules,
    or_list,
    selector_text,
    unknown_fields,
    validate_metric_rule,
)
from rollouts.model.manifests import Finding
from rollouts.model.meta import LabelSelector
from rollouts.model.pod import PodTemplateSpec
from rollouts.model.rollout import (
    BlueGreenStrategy,
    CanaryStep,
    CanaryStrategy,
    Rollout,
    RolloutAnalysis,
    StringMatch,
)
from rollouts.model.validate_probes import validate_container_probes

# Argo's defaults, as far as validation reads them (kept here: the model layer sits below core).
DEFAULT_MAX_TRAFFIC_WEIGHT = 100
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
POD_TEMPLATE_HASH_LABEL = "rollouts-pod-template-hash"

SUPPORTED_ROUTERS = frozenset({"nginx"})
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


# --- Rollout -----------------------------------------------------------------------------------


def validate_rollout(rollout: Rollout, *, known: KnownObjects) -> list[Finding]:
    """Every Argo rule for a Rollout, plus warnings for features we cannot run and for
    references to Services and templates that are not in `known`."""
    out = Findings("Rollout", rollout.metadata.name)
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
    out = Findings("Rollout", rollout.metadata.name)
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
    out = Findings("Rollout", rollout.metadata.name)
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


def _validate_spec(out: Findings, rollout: Rollout) -> None:
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


def _validate_selector(out: Findings, selector: LabelSelector | None, template: PodTemplateSpec | None) -> None:
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
        shown = labels_text(labels) if labels else "(none)"
        out.error(
            "spec.selector",
            f"does not match the template labels {shown}; make spec.template.metadata.labels carry "
            f"every selector label ({selector_text(selector)})",
        )


def _validate_template(out: Findings, template: PodTemplateSpec | None) -> None:
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
        validate_container_probes(out, path, container)
        if not container.command:
            out.warning(
                f"{path}.command",
                "not set; the embedded platform runs command + args as a local process, so this pod "
                "cannot start there (fine on Kubernetes, where the image's entrypoint runs)",
            )
    for i, init in enumerate(template.spec.init_containers or []):
        if not init.image:
            out.error(f"spec.template.spec.initContainers[{i}].image", "missing (set the container image)")


def _validate_canary(out: Findings, rollout: Rollout, canary: CanaryStrategy) -> None:
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
    out: Findings,
    rollout: Rollout,
    canary: CanaryStrategy,
    path: str,
    step: CanaryStep,
    max_weight: int,
    route_names: set[str],
) -> None:
    kinds = step.kinds()
    if not kinds:
        out.error(path, f"sets no step kind; set exactly one of {or_list(STEP_KINDS)}")
    elif len(kinds) > 1:
        out.error(path, f"sets {'both ' if len(kinds) == 2 else ''}{and_list(kinds)}; a step must set exactly one")
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
            out.error(scale_path, f"sets {and_list(chosen)}; set exactly one of weight, replicas or matchTrafficWeight")
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
        # nginx (one header: canary-by-header) and the embedded proxy (trafficRouting with
        # managedRoutes and no router) apply header routes too, beyond Argo's list.
        if routing is None or not (
            routing.istio is not None
            or routing.alb is not None
            or routing.apisix is not None
            or routing.plugins
            or routing.nginx is not None
            or not routing.routers()
        ):
            out.error(
                route_path,
                "needs trafficRouting through istio, alb, apisix, nginx or plugins, or trafficRouting with "
                "managedRoutes alone (the embedded proxy)",
            )
        else:
            if routing.nginx is not None and len(step.set_header_route.match or []) > 1:
                out.warning(
                    f"{route_path}.match",
                    "the nginx router matches one header only: match[0] is applied, the others are ignored",
                )
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
        if routing is None or not (
            routing.istio is not None or routing.plugins or routing.nginx is not None or not routing.routers()
        ):
            out.error(
                route_path,
                "needs trafficRouting through istio or plugins, or trafficRouting with managedRoutes alone "
                "(the embedded proxy)",
            )
        elif routing.nginx is not None:
            out.warning(route_path, "the nginx router cannot mirror traffic: this step completes without effect")
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
    out: Findings, canary: CanaryStrategy, path: str, name: str | None, route_names: set[str]
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


def _validate_string_match(out: Findings, path: str, match: StringMatch | None) -> None:
    values = [] if match is None else [v for v in (match.exact, match.regex, match.prefix) if v]
    if not values:
        out.error(path, "sets no value; set exactly one of exact, regex or prefix")
    elif len(values) > 1:
        out.error(path, "sets more than one of exact, regex and prefix; set exactly one")


def _validate_traffic_routing(out: Findings, base: str, canary: CanaryStrategy) -> None:
    routing = canary.traffic_routing
    assert routing is not None
    path = f"{base}.trafficRouting"
    # managedRoutes alone: the embedded proxy routes (and splits by weight) by itself.
    if not routing.routers() and not routing.managed_routes:
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


def _validate_ping_pong(out: Findings, base: str, canary: CanaryStrategy) -> None:
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


def _validate_anti_affinity(out: Findings, path: str, anti_affinity: dict[str, Any]) -> None:
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


def _validate_blue_green(out: Findings, rollout: Rollout, blue_green: BlueGreenStrategy) -> None:
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


def _validate_analysis(out: Findings, rollout: Rollout, path: str, analysis: RolloutAnalysis) -> None:
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
    for rule_path, metric_name in metric_rules(analysis.dry_run, analysis.measurement_retention):
        validate_metric_rule(out, f"{path}.{rule_path}", metric_name)
    for i, retention in enumerate(analysis.measurement_retention or []):
        if retention.limit < 0:
            out.error(f"{path}.measurementRetention[{i}].limit", f"{retention.limit} is negative (use 0 or more)")


def _validate_pause_duration(out: Findings, path: str, value: int | str) -> None:
    try:
        seconds = parse_pause_duration(value)
    except DurationError as exc:
        out.error(path, str(exc))
        return
    if seconds < 0:
        out.error(path, f"{value!r} is negative (use 0 or more, e.g. 30 or '5m')")


def _validate_surge(out: Findings, base: str, max_surge: int | str | None, max_unavailable: int | str | None) -> None:
    surge = _validate_int_or_percent(out, f"{base}.maxSurge", max_surge) if max_surge is not None else 25
    unavailable = (
        _validate_int_or_percent(out, f"{base}.maxUnavailable", max_unavailable) if max_unavailable is not None else 25
    )
    if surge == 0 and unavailable == 0:
        out.error(
            f"{base}.maxSurge",
            "maxSurge and maxUnavailable are both 0, so no pod could ever be replaced (set one of them above 0)",
        )


def _validate_int_or_percent(out: Findings, path: str, value: int | str) -> int | None:
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


def _non_negative(out: Findings, path: str, value: int | None) -> None:
    if value is not None and value < 0:
        out.error(path, f"{value} is negative (use 0 or more)")
