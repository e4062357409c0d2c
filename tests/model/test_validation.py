"""Validation rules for Rollouts and analysis templates: one error case and one clean case per rule.

Each case patches a valid base manifest and lists the findings expected, as (severity, path,
message). A message ending in "…" is matched as a prefix; otherwise exactly. Covers
`validate_rollout` (spec, canary, blue/green, analysis references, unsupported features,
misspelt fields), `validate_references` (Service selectors and template merging),
`validate_analysis_template` and `validate_analysis_run`.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rollouts.model.analysis import AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate
from rollouts.model.manifests import Finding, parse_resource
from rollouts.model.rollout import Rollout
from rollouts.model.service import Service
from rollouts.model.validate_analysis import validate_analysis_run, validate_analysis_template
from rollouts.model.validate_references import validate_references
from rollouts.model.validation import (
    KnownObjects,
    service_not_found,
    template_not_found,
    validate_rollout,
)

DELETE = object()
Expected = list[tuple[str, str, str]]

KNOWN = KnownObjects(
    services={"stable", "canary", "active", "preview", "ping", "pong"},
    templates={"success-rate", "latency"},
    cluster_templates={"global-check"},
)

CONTAINER = {"name": "app", "image": "demo:v1", "command": ["python", "-m", "rollouts.demo.app"]}
BASE: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "demo"},
    "spec": {
        "replicas": 4,
        "selector": {"matchLabels": {"app": "demo"}},
        "template": {"metadata": {"labels": {"app": "demo"}}, "spec": {"containers": [CONTAINER]}},
        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}]}},
    },
}
NGINX = {"nginx": {"stableIngress": "demo"}}
ROUTED = {
    "spec.strategy.canary.canaryService": "canary",
    "spec.strategy.canary.stableService": "stable",
    "spec.strategy.canary.trafficRouting": NGINX,
}
BLUE_GREEN = {"spec.strategy": {"blueGreen": {"activeService": "active", "previewService": "preview"}}}
S = "spec.strategy.canary"
B = "spec.strategy.blueGreen"


def patched(base: dict[str, Any], patches: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with dotted paths set (or removed with DELETE)."""
    raw = copy.deepcopy(base)
    for dotted, value in patches.items():
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return raw


def rollout(**patches: Any) -> Rollout:
    raw = patched(BASE, {k.replace("__", "."): v for k, v in patches.items()})
    resource = parse_resource(raw)
    assert isinstance(resource, Rollout)
    return resource


def rollout_with(*patch_sets: dict[str, Any]) -> Rollout:
    raw = BASE
    for patches in patch_sets:
        raw = patched(raw, patches)
    resource = parse_resource(raw)
    assert isinstance(resource, Rollout)
    return resource


def check(findings: list[Finding], expected: Expected) -> None:
    got = [(f.severity, f.path, f.message) for f in findings]
    assert len(got) == len(expected), "\n".join(str(f) for f in findings)
    for (severity, path, message), (want_severity, want_path, want_message) in zip(got, expected, strict=True):
        assert (severity, path) == (want_severity, want_path), "\n".join(str(f) for f in findings)
        if want_message.endswith("…"):
            assert message.startswith(want_message[:-1]), message
        else:
            assert message == want_message


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    return {f"{S}.steps": list(items)}


# --- Rollout: spec ---------------------------------------------------------------------------------

SPEC_CASES = [
    pytest.param({}, [], id="clean-canary"),
    pytest.param(BLUE_GREEN, [], id="clean-blue-green"),
    pytest.param(
        {"spec.strategy": {}},
        [("error", "spec.strategy", "sets no strategy; add exactly one of canary or blueGreen")],
        id="no-strategy",
    ),
    pytest.param(
        {"spec.strategy.blueGreen": {"activeService": "active"}},
        [
            (
                "error",
                "spec.strategy",
                "sets both canary and blueGreen; a rollout uses exactly one strategy (remove one of them)",
            )
        ],
        id="both-strategies",
    ),
    pytest.param(
        {"spec.selector": DELETE},
        [("error", "spec.selector", "missing (add matchLabels that the pod template's labels carry)")],
        id="selector-missing",
    ),
    pytest.param(
        {"spec.selector": {}},
        [("error", "spec.selector", "is empty, which would select every pod (add matchLabels)")],
        id="selector-empty",
    ),
    pytest.param(
        {"spec.selector.matchLabels": {"app": "other"}},
        [
            (
                "error",
                "spec.selector",
                "does not match the template labels app=demo; make spec.template.metadata.labels carry "
                "every selector label (app=other)",
            )
        ],
        id="selector-mismatch",
    ),
    pytest.param(
        {"spec.selector.matchLabels": {"app": "demo", "tier": "web"}},
        [("error", "spec.selector", "does not match the template labels app=demo; …")],
        id="selector-needs-more-labels",
    ),
    pytest.param(
        {"spec.selector.matchExpressions": [{"key": "app", "operator": "In", "values": ["demo", "x"]}]},
        [],
        id="selector-expression-clean",
    ),
    pytest.param(
        {"spec.selector.matchExpressions": [{"key": "app", "operator": "Equals", "values": ["demo"]}]},
        [("error", "spec.selector.matchExpressions[0].operator", "'Equals' is not an operator …")],
        id="selector-bad-operator",
    ),
    pytest.param(
        {"spec.selector.matchExpressions": [{"key": "app", "operator": "In"}]},
        [("error", "spec.selector.matchExpressions[0].values", "the In operator needs at least one value")],
        id="selector-in-without-values",
    ),
    pytest.param(
        {"spec.selector.matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]},
        [("error", "spec.selector.matchExpressions[0].values", "must be empty with the Exists operator")],
        id="selector-exists-with-values",
    ),
    pytest.param(
        {"spec.template": DELETE},
        [("error", "spec.template", "missing (add a pod template with at least one container)")],
        id="template-missing",
    ),
    pytest.param(
        {"spec.template.spec.containers": []},
        [("error", "spec.template.spec.containers", "at least one container is required")],
        id="no-containers",
    ),
    pytest.param(
        {"spec.template.spec.containers": [{**CONTAINER, "name": ""}]},
        [("error", "spec.template.spec.containers[0].name", "empty (give the container a name)")],
        id="container-name-empty",
    ),
    pytest.param(
        {"spec.template.spec.containers": [{**CONTAINER, "name": "App_1"}]},
        [("error", "spec.template.spec.containers[0].name", "'App_1' is not a valid container name …")],
        id="container-name-invalid",
    ),
    pytest.param(
        {"spec.template.spec.containers": [CONTAINER, CONTAINER]},
        [
            (
                "error",
                "spec.template.spec.containers[1].name",
                "duplicate container name 'app' (also spec.template.spec.containers[0])",
            )
        ],
        id="container-name-duplicate",
    ),
    pytest.param(
        {"spec.template.spec.containers": [{"name": "app", "command": ["run"]}]},
        [("error", "spec.template.spec.containers[0].image", "missing (set the container image)")],
        id="container-image-missing",
    ),
    pytest.param(
        {"spec.template.spec.containers": [{"name": "app", "image": "demo:v1"}]},
        [
            (
                "warning",
                "spec.template.spec.containers[0].command",
                "not set; the embedded platform runs command + args as a local process, so this pod cannot "
                "start there (fine on Kubernetes, where the image's entrypoint runs)",
            )
        ],
        id="container-command-missing",
    ),
    pytest.param({"spec.replicas": 0}, [], id="replicas-zero"),
    pytest.param(
        {"spec.replicas": -1},
        [("error", "spec.replicas", "-1 is negative (use 0 or more)")],
        id="replicas-negative",
    ),
    pytest.param(
        {"spec.minReadySeconds": 30, "spec.progressDeadlineSeconds": 10},
        [
            (
                "error",
                "spec.progressDeadlineSeconds",
                "10 must be greater than minReadySeconds (30); raise it or lower minReadySeconds",
            )
        ],
        id="deadline-below-min-ready",
    ),
    pytest.param(
        {"spec.minReadySeconds": 600},
        [("error", "spec.progressDeadlineSeconds", "600 must be greater than minReadySeconds (600); …")],
        id="default-deadline-equals-min-ready",
    ),
    pytest.param({"spec.minReadySeconds": 30, "spec.progressDeadlineSeconds": 31}, [], id="deadline-clean"),
    pytest.param(
        {"spec.minReadySeconds": -1},
        [("error", "spec.minReadySeconds", "-1 is negative (use 0 or more)")],
        id="min-ready-negative",
    ),
    pytest.param(
        {"spec.revisionHistoryLimit": -1},
        [("error", "spec.revisionHistoryLimit", "-1 is negative (use 0 or more)")],
        id="history-negative",
    ),
    pytest.param({"spec.revisionHistoryLimit": 0}, [], id="history-zero"),
    pytest.param({"spec.restartAt": "2024-05-01T12:00:00Z"}, [], id="restart-at-clean"),
    pytest.param(
        {"spec.restartAt": "tomorrow"},
        [("error", "spec.restartAt", "'tomorrow' is not a time (use RFC 3339, e.g. 2024-05-01T12:00:00Z)")],
        id="restart-at-invalid",
    ),
]


@pytest.mark.parametrize(("patches", "expected"), SPEC_CASES)
def test_rollout_spec_rules(patches: dict[str, Any], expected: Expected) -> None:
    check(validate_rollout(rollout_with(patches), known=KNOWN), expected)


# --- Rollout: container probes ---------------------------------------------------------------------

C0 = "spec.template.spec.containers[0]"
HTTP_PROBE = {"httpGet": {"path": "/healthz", "port": 8080}}


def probes(**fields: Any) -> dict[str, Any]:
    """The base container with probe fields (`readinessProbe=...`) and maybe `ports`."""
    return {"spec.template.spec.containers": [{**CONTAINER, **fields}]}


PROBE_CASES = [
    pytest.param(
        probes(
            ports=[{"name": "http", "containerPort": 8080}],
            readinessProbe={"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTPS"}, "successThreshold": 2},
            livenessProbe={"tcpSocket": {"port": 8080}, "failureThreshold": 5},
            startupProbe={"exec": {"command": ["cat", "/tmp/started"]}, "periodSeconds": 1},
        ),
        [],
        id="probes-clean",
    ),
    pytest.param(
        probes(livenessProbe={**HTTP_PROBE, "exec": {"command": ["true"]}}),
        [("error", f"{C0}.livenessProbe", "sets 2 handlers (httpGet, exec); set exactly one")],
        id="probe-two-handlers",
    ),
    pytest.param(
        probes(readinessProbe={"periodSeconds": 1}),
        [("error", f"{C0}.readinessProbe", "sets no handler; set exactly one of httpGet, tcpSocket or exec")],
        id="probe-no-handler",
    ),
    pytest.param(
        probes(readinessProbe={"httpget": {"port": 8080}}),
        [
            (
                "error",
                f"{C0}.readinessProbe",
                "sets no handler (unknown field 'httpget'); set exactly one of httpGet, tcpSocket or exec",
            )
        ],
        id="probe-unknown-handler",
    ),
    pytest.param(
        probes(startupProbe={"tcpSocket": {"port": 0}}),
        [("error", f"{C0}.startupProbe.tcpSocket.port", "0 is out of range (use 1-65535)")],
        id="probe-port-out-of-range",
    ),
    pytest.param(
        probes(readinessProbe={"httpGet": {"path": "/"}}),
        [("error", f"{C0}.readinessProbe.httpGet.port", "missing (set a port number or the name of …")],
        id="probe-port-missing",
    ),
    pytest.param(
        probes(readinessProbe={"httpGet": {"path": "/", "port": "web"}}),
        [
            (
                "error",
                f"{C0}.readinessProbe.httpGet.port",
                "'web' is not a named port of this container (name it in ports[] or use a number)",
            )
        ],
        id="probe-named-port-not-declared",
    ),
    pytest.param(
        probes(livenessProbe={**HTTP_PROBE, "successThreshold": 3}),
        [("error", f"{C0}.livenessProbe.successThreshold", "3 must be 1 for a liveness probe (or leave it unset)")],
        id="probe-liveness-success-threshold",
    ),
    pytest.param(
        probes(startupProbe={**HTTP_PROBE, "successThreshold": 2}),
        [("error", f"{C0}.startupProbe.successThreshold", "2 must be 1 for a startup probe (or leave it unset)")],
        id="probe-startup-success-threshold",
    ),
    pytest.param(
        probes(readinessProbe={**HTTP_PROBE, "periodSeconds": -1}),
        [("error", f"{C0}.readinessProbe.periodSeconds", "-1 is negative (use 0 or more; 0 means the default)")],
        id="probe-negative-period",
    ),
    pytest.param(
        probes(readinessProbe={"httpGet": {"port": 8080, "scheme": "ftp"}}),
        [("error", f"{C0}.readinessProbe.httpGet.scheme", "'ftp' is not a scheme (use HTTP or HTTPS)")],
        id="probe-bad-scheme",
    ),
    pytest.param(
        probes(readinessProbe={"httpGet": {"port": 8080, "httpHeaders": [{"name": "X Bad", "value": "a\r\nb"}]}}),
        [
            (
                "error",
                f"{C0}.readinessProbe.httpGet.httpHeaders[0].name",
                "'X Bad' is not a valid header name (letters, digits, -)",
            ),
            ("error", f"{C0}.readinessProbe.httpGet.httpHeaders[0].value", "contains a line break (use a single line)"),
        ],
        id="probe-bad-header",
    ),
    pytest.param(
        probes(livenessProbe={"exec": {"command": []}}),
        [("error", f"{C0}.livenessProbe.exec.command", "empty (give the command to run, e.g. [cat, /tmp/healthy])")],
        id="probe-exec-empty-command",
    ),
    pytest.param(
        probes(readinessProbe={"grpc": {"port": 9000}}),
        [("warning", f"{C0}.readinessProbe.grpc", "not supported by the embedded platform, which runs …")],
        id="probe-grpc-warning",
    ),
]


@pytest.mark.parametrize(("patches", "expected"), PROBE_CASES)
def test_container_probe_rules(patches: dict[str, Any], expected: Expected) -> None:
    check(validate_rollout(rollout_with(patches), known=KNOWN), expected)


# --- Rollout: canary -------------------------------------------------------------------------------

CANARY_CASES = [
    pytest.param(
        steps({}),
        [
            (
                "error",
                f"{S}.steps[0]",
                "sets no step kind; set exactly one of setWeight, pause, analysis, experiment, setCanaryScale, "
                "setHeaderRoute, setMirrorRoute or plugin",
            )
        ],
        id="step-no-kind",
    ),
    pytest.param(
        steps({"setWeight": 10}, {"setWeight": 50, "pause": {"duration": "1m"}}),
        [("error", f"{S}.steps[1]", "sets both setWeight and pause; a step must set exactly one")],
        id="step-two-kinds",
    ),
    pytest.param(
        steps({"setWeight": 50, "pause": {}, "analysis": {"templates": [{"templateName": "latency"}]}}),
        [("error", f"{S}.steps[0]", "sets setWeight, pause and analysis; a step must set exactly one")],
        id="step-three-kinds",
    ),
    pytest.param(
        steps({"setWeight": 10}, {"pause": {}}, {"setWeight": 140}),
        [("error", f"{S}.steps[2].setWeight", "140 is not between 0 and 100 (use a weight from 0 to 100)")],
        id="set-weight-140",
    ),
    pytest.param(
        steps({"setWeight": -1}),
        [("error", f"{S}.steps[0].setWeight", "-1 is not between 0 and 100 (use a weight from 0 to 100)")],
        id="set-weight-negative",
    ),
    pytest.param(steps({"setWeight": 0}, {"setWeight": 100}), [], id="set-weight-bounds"),
    pytest.param(
        {**ROUTED, f"{S}.trafficRouting": {**NGINX, "maxTrafficWeight": 1000}, **steps({"setWeight": 500})},
        [],
        id="set-weight-max-traffic-weight",
    ),
    pytest.param(
        {**ROUTED, f"{S}.trafficRouting": {**NGINX, "maxTrafficWeight": 200}, **steps({"setWeight": 300})},
        [("error", f"{S}.steps[0].setWeight", "300 is not between 0 and 200 (use a weight from 0 to 200)")],
        id="set-weight-above-max-traffic-weight",
    ),
    pytest.param(
        steps({"pause": {"duration": 30}}, {"pause": {"duration": "30"}}, {"pause": {"duration": "1h30m"}}),
        [],
        id="pause-durations-clean",
    ),
    pytest.param(steps({"pause": {}}), [], id="pause-indefinite"),
    pytest.param(
        steps({"pause": {"duration": "five minutes"}}),
        [
            (
                "error",
                f"{S}.steps[0].pause.duration",
                "invalid duration 'five minutes': expected a number and a unit (ns, us, ms, s, m, h), e.g. '30s'",
            )
        ],
        id="pause-duration-invalid",
    ),
    pytest.param(
        steps({"pause": {"duration": -5}}),
        [("error", f"{S}.steps[0].pause.duration", "-5 is negative (use 0 or more, e.g. 30 or '5m')")],
        id="pause-duration-negative-int",
    ),
    pytest.param(
        steps({"pause": {"duration": "-5s"}}),
        [("error", f"{S}.steps[0].pause.duration", "'-5s' is negative (use 0 or more, e.g. 30 or '5m')")],
        id="pause-duration-negative-string",
    ),
    pytest.param(
        {**ROUTED, **steps({"setCanaryScale": {"weight": 20}}, {"setCanaryScale": {"matchTrafficWeight": True}})},
        [],
        id="set-canary-scale-clean",
    ),
    pytest.param(
        steps({"setCanaryScale": {"replicas": 1}}),
        [("error", f"{S}.steps[0].setCanaryScale", "needs trafficRouting: …")],
        id="set-canary-scale-without-routing",
    ),
    pytest.param(
        {**ROUTED, **steps({"setCanaryScale": {"matchTrafficWeight": False}})},
        [
            (
                "error",
                f"{S}.steps[0].setCanaryScale",
                "sets none of weight, replicas or matchTrafficWeight: true; set exactly one",
            )
        ],
        id="set-canary-scale-none",
    ),
    pytest.param(
        {**ROUTED, **steps({"setCanaryScale": {"weight": 10, "replicas": 2}})},
        [
            (
                "error",
                f"{S}.steps[0].setCanaryScale",
                "sets weight and replicas; set exactly one of weight, replicas or matchTrafficWeight",
            )
        ],
        id="set-canary-scale-two",
    ),
    pytest.param(
        {**ROUTED, **steps({"setCanaryScale": {"weight": 150}})},
        [("error", f"{S}.steps[0].setCanaryScale.weight", "150 is not between 0 and 100 …")],
        id="set-canary-scale-weight",
    ),
    pytest.param(
        {**ROUTED, **steps({"setCanaryScale": {"replicas": -1}})},
        [("error", f"{S}.steps[0].setCanaryScale.replicas", "-1 is negative (use 0 or more)")],
        id="set-canary-scale-replicas",
    ),
    pytest.param({f"{S}.maxSurge": 1, f"{S}.maxUnavailable": 0}, [], id="surge-int-clean"),
    pytest.param({f"{S}.maxSurge": "50%", f"{S}.maxUnavailable": "0%"}, [], id="surge-percent-clean"),
    pytest.param(
        {f"{S}.maxSurge": "abc"},
        [("error", f"{S}.maxSurge", "'abc' is not an integer or a percentage (use e.g. 1 or \"25%\")")],
        id="surge-invalid",
    ),
    pytest.param(
        {f"{S}.maxUnavailable": "1"},
        [("error", f"{S}.maxUnavailable", "'1' is not an integer or a percentage (use e.g. 1 or \"25%\")")],
        id="unavailable-digit-string",
    ),
    pytest.param(
        {f"{S}.maxSurge": -1},
        [("error", f"{S}.maxSurge", '-1 is negative (use 0 or more, or a percentage like "25%")')],
        id="surge-negative",
    ),
    pytest.param(
        {f"{S}.maxSurge": 0, f"{S}.maxUnavailable": "0%"},
        [
            (
                "error",
                f"{S}.maxSurge",
                "maxSurge and maxUnavailable are both 0, so no pod could ever be replaced (set one of them above 0)",
            )
        ],
        id="surge-and-unavailable-zero",
    ),
    pytest.param(
        {f"{S}.canaryService": "stable", f"{S}.stableService": "stable"},
        [
            (
                "error",
                f"{S}.stableService",
                'is the same Service as canaryService ("stable"); use two different Services',
            )
        ],
        id="same-canary-and-stable-service",
    ),
    pytest.param({f"{S}.canaryService": "canary", f"{S}.stableService": "stable"}, [], id="services-clean"),
    pytest.param(ROUTED, [], id="nginx-clean"),
    pytest.param(
        {f"{S}.trafficRouting": NGINX},
        [
            (
                "error",
                f"{S}.canaryService",
                "required with trafficRouting (name the Service that selects the canary pods)",
            ),
            (
                "error",
                f"{S}.stableService",
                "required with trafficRouting (name the Service that selects the stable pods)",
            ),
        ],
        id="routing-needs-services",
    ),
    pytest.param(
        {**ROUTED, f"{S}.trafficRouting": {"nginx": {}}},
        [("error", f"{S}.trafficRouting.nginx", "sets neither stableIngress nor stableIngresses; …")],
        id="nginx-no-ingress",
    ),
    pytest.param(
        {**ROUTED, f"{S}.trafficRouting": {"nginx": {"stableIngress": "a", "stableIngresses": ["b"]}}},
        [("error", f"{S}.trafficRouting.nginx", "sets both stableIngress and stableIngresses; set exactly one")],
        id="nginx-two-ingress-fields",
    ),
    pytest.param(
        {**ROUTED, f"{S}.trafficRouting": {}},
        [("warning", f"{S}.trafficRouting", "names no traffic router …")],
        id="routing-without-router",
    ),
    pytest.param(
        {f"{S}.scaleDownDelaySeconds": 30},
        [("error", f"{S}.scaleDownDelaySeconds", "only works with trafficRouting (remove it, or add a router)")],
        id="scale-down-delay-without-routing",
    ),
    pytest.param({**ROUTED, f"{S}.scaleDownDelaySeconds": 30}, [], id="scale-down-delay-clean"),
    pytest.param(
        {f"{S}.dynamicStableScale": True},
        [("error", f"{S}.dynamicStableScale", "only works with trafficRouting (remove it, or add a router)")],
        id="dynamic-stable-scale-without-routing",
    ),
    pytest.param(
        {**ROUTED, f"{S}.dynamicStableScale": True, f"{S}.scaleDownDelaySeconds": 30},
        [("error", f"{S}.dynamicStableScale", "cannot be used with scaleDownDelaySeconds (remove one of them)")],
        id="dynamic-stable-scale-with-delay",
    ),
    pytest.param({**ROUTED, f"{S}.dynamicStableScale": True}, [], id="dynamic-stable-scale-clean"),
    pytest.param(
        {f"{S}.minPodsPerReplicaSet": 2},
        [("error", f"{S}.minPodsPerReplicaSet", "only works with trafficRouting (remove it, or add a router)")],
        id="min-pods-without-routing",
    ),
    pytest.param({**ROUTED, f"{S}.minPodsPerReplicaSet": 2}, [], id="min-pods-clean"),
    pytest.param(
        {f"{S}.replicaProgressThreshold": {"type": "Pod", "value": 1}},
        [("error", f"{S}.replicaProgressThreshold.type", "'Pod' is not a threshold type (use Percent or Pods)")],
        id="replica-progress-threshold-type",
    ),
    pytest.param({f"{S}.replicaProgressThreshold": {"type": "Percent", "value": 50}}, [], id="threshold-clean"),
    pytest.param(
        {**ROUTED, f"{S}.trafficRouting": {"istio": {"virtualService": {"name": "vs"}}, "maxTrafficWeight": 1000}},
        [
            (
                "error",
                f"{S}.trafficRouting.maxTrafficWeight",
                "only works with the nginx router or plugins (remove it)",
            ),
            ("warning", f"{S}.trafficRouting.istio", "the istio traffic router is not supported by rollouts yet; …"),
        ],
        id="max-traffic-weight-with-istio",
    ),
]


@pytest.mark.parametrize(("patches", "expected"), CANARY_CASES)
def test_canary_rules(patches: dict[str, Any], expected: Expected) -> None:
    check(validate_rollout(rollout_with(patches), known=KNOWN), expected)


# --- Rollout: header and mirror routes --------------------------------------------------------------

ISTIO = {
    f"{S}.canaryService": "canary",
    f"{S}.stableService": "stable",
    f"{S}.trafficRouting": {"istio": {"virtualService": {"name": "vs"}}, "managedRoutes": [{"name": "header"}]},
}
ISTIO_WARNING = ("warning", f"{S}.trafficRouting.istio", "the istio traffic router is not supported by rollouts yet; …")
HEADER = {"name": "header", "match": [{"headerName": "x-canary", "headerValue": {"exact": "yes"}}]}

ROUTE_CASES = [
    pytest.param({**ISTIO, **steps({"setHeaderRoute": HEADER})}, [ISTIO_WARNING], id="header-route-clean"),
    pytest.param(
        {**ISTIO, **steps({"setHeaderRoute": {**HEADER, "name": "other"}})},
        [
            (
                "error",
                f"{S}.steps[0].setHeaderRoute.name",
                "'other' is not in spec.strategy.canary.trafficRouting.managedRoutes (add - name: other)",
            ),
            ISTIO_WARNING,
        ],
        id="header-route-not-managed",
    ),
    pytest.param(
        {
            **ISTIO,
            f"{S}.trafficRouting": {"istio": {"virtualService": {"name": "vs"}}},
            **steps({"setHeaderRoute": HEADER}),
        },
        [
            ("error", f"{S}.trafficRouting.managedRoutes", "missing: setHeaderRoute steps need their route …"),
            ISTIO_WARNING,
        ],
        id="header-route-without-managed-routes",
    ),
    pytest.param(
        {
            **ISTIO,
            **steps(
                {"setHeaderRoute": {"name": "header", "match": [{"headerName": "x", "headerValue": {}}]}},
                {
                    "setHeaderRoute": {
                        "name": "header",
                        "match": [{"headerName": "x", "headerValue": {"exact": "a", "prefix": "b"}}],
                    }
                },
            ),
        },
        [
            ("error", f"{S}.steps[0].setHeaderRoute.match[0].headerValue", "sets no value; …"),
            ("error", f"{S}.steps[1].setHeaderRoute.match[0].headerValue", "sets more than one of exact, …"),
            ISTIO_WARNING,
        ],
        id="header-route-string-match",
    ),
    pytest.param(
        {
            **ROUTED,
            f"{S}.trafficRouting": {**NGINX, "managedRoutes": [{"name": "header"}]},
            **steps({"setHeaderRoute": HEADER}),
        },
        [],
        id="header-route-with-nginx",
    ),
    pytest.param(
        {
            **ROUTED,
            f"{S}.trafficRouting": {**NGINX, "managedRoutes": [{"name": "header"}]},
            **steps({"setHeaderRoute": {**HEADER, "match": [*HEADER["match"], *HEADER["match"]]}}),
        },
        [("warning", f"{S}.steps[0].setHeaderRoute.match", "the nginx router matches one header only: …")],
        id="header-route-with-nginx-two-matches",
    ),
    pytest.param(
        {
            f"{S}.trafficRouting": {"managedRoutes": [{"name": "header"}, {"name": "mirror"}]},
            **steps(
                {"setHeaderRoute": HEADER},
                {"setMirrorRoute": {"name": "mirror", "match": [{"method": {"exact": "GET"}}]}},
            ),
        },
        [],  # the embedded proxy is the router: no "names no traffic router" warning
        id="routes-on-the-embedded-proxy",
    ),
    pytest.param(
        {f"{S}.trafficRouting": DELETE, **steps({"setHeaderRoute": HEADER})},
        [("error", f"{S}.steps[0].setHeaderRoute", "needs trafficRouting through istio, alb, apisix, nginx or …")],
        id="header-route-without-traffic-routing",
    ),
    pytest.param(
        {
            **ROUTED,
            f"{S}.trafficRouting": {"smi": {}, "managedRoutes": [{"name": "header"}]},
            **steps({"setHeaderRoute": HEADER}),
        },
        [
            ("error", f"{S}.steps[0].setHeaderRoute", "needs trafficRouting through istio, alb, apisix, nginx or …"),
            ("warning", f"{S}.trafficRouting.smi", "the smi traffic router is not supported by rollouts yet; …"),
        ],
        id="header-route-with-smi",
    ),
    pytest.param(
        {
            **ROUTED,
            f"{S}.trafficRouting": {**NGINX, "managedRoutes": [{"name": "mirror"}]},
            **steps({"setMirrorRoute": {"name": "mirror", "percentage": 50}}),
        },
        [("warning", f"{S}.steps[0].setMirrorRoute", "the nginx router cannot mirror traffic: …")],
        id="mirror-route-with-nginx",
    ),
    pytest.param(
        {
            **ISTIO,
            f"{S}.trafficRouting": {"istio": {"virtualService": {"name": "vs"}}, "managedRoutes": [{"name": "mirror"}]},
            **steps({"setMirrorRoute": {"name": "mirror", "percentage": 150, "match": [{"method": {}}]}}),
        },
        [
            ("error", f"{S}.steps[0].setMirrorRoute.match[0].method", "sets no value; …"),
            ("error", f"{S}.steps[0].setMirrorRoute.percentage", "150 is not between 0 and 100"),
            ISTIO_WARNING,
        ],
        id="mirror-route-invalid",
    ),
]


@pytest.mark.parametrize(("patches", "expected"), ROUTE_CASES)
def test_route_step_rules(patches: dict[str, Any], expected: Expected) -> None:
    check(validate_rollout(rollout_with(patches), known=KNOWN), expected)


# --- Rollout: analysis and references ------------------------------------------------------------------


def _analysis(*names: str, **extra: Any) -> dict[str, Any]:
    return {"analysis": {"templates": [{"templateName": n} for n in names], **extra}}


ANALYSIS_CASES = [
    pytest.param(steps(_analysis("success-rate", "latency")), [], id="analysis-step-clean"),
    pytest.param(
        steps({"analysis": {"templates": []}}),
        [
            (
                "error",
                f"{S}.steps[0].analysis.templates",
                "at least one template is required (add - templateName: <name>)",
            )
        ],
        id="analysis-step-no-templates",
    ),
    pytest.param(
        steps(_analysis("")),
        [("error", f"{S}.steps[0].analysis.templates[0].templateName", "empty (name an AnalysisTemplate)")],
        id="analysis-step-empty-template-name",
    ),
    pytest.param(
        steps(_analysis("missing")),
        [
            (
                "warning",
                f"{S}.steps[0].analysis.templates[0].templateName",
                'analysis template "missing" not found: apply it before the rollout runs',
            )
        ],
        id="analysis-template-not-found",
    ),
    pytest.param(
        steps({"analysis": {"templates": [{"templateName": "global-check", "clusterScope": True}]}}),
        [],
        id="cluster-template-clean",
    ),
    pytest.param(
        steps({"analysis": {"templates": [{"templateName": "success-rate", "clusterScope": True}]}}),
        [
            (
                "warning",
                f"{S}.steps[0].analysis.templates[0].templateName",
                'cluster analysis template "success-rate" not found: apply it before the rollout runs',
            )
        ],
        id="cluster-template-not-found",
    ),
    pytest.param(
        steps(
            _analysis(
                "latency",
                args=[
                    {"name": "hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
                    {"name": "app", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "img", "valueFrom": {"fieldRef": {"fieldPath": "spec.template.spec.containers[0].image"}}},
                ],
            )
        ),
        [],
        id="analysis-args-clean",
    ),
    pytest.param(
        steps(
            _analysis(
                "latency", args=[{"name": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.label['app']"}}}]
            )
        ),
        [
            (
                "error",
                f"{S}.steps[0].analysis.args[0].valueFrom.fieldRef.fieldPath",
                "\"metadata.label['app']\" is not a metadata field …",
            )
        ],
        id="analysis-args-bad-field-ref",
    ),
    pytest.param(
        steps(_analysis("latency", args=[{"name": "x", "value": "1"}, {"name": "x", "value": "2"}])),
        [
            (
                "error",
                f"{S}.steps[0].analysis.args[1].name",
                "duplicate argument 'x' (also spec.strategy.canary.steps[0].analysis.args[0])",
            )
        ],
        id="analysis-args-duplicate",
    ),
    pytest.param(
        steps(_analysis("latency", dryRun=[{"metricName": "("}])),
        [("error", f"{S}.steps[0].analysis.dryRun[0].metricName", "'(' is not a valid regular expression …")],
        id="analysis-dry-run-bad-regex",
    ),
    pytest.param(
        {f"{S}.analysis": {"templates": [{"templateName": "success-rate"}], "startingStep": 1}},
        [],
        id="background-analysis-clean",
    ),
    pytest.param(
        {f"{S}.analysis": {"templates": []}},
        [("error", f"{S}.analysis.templates", "at least one template is required (add - templateName: <name>)")],
        id="background-analysis-no-templates",
    ),
    pytest.param(
        {f"{S}.canaryService": "nope-canary", f"{S}.stableService": "nope-stable"},
        [
            ("warning", f"{S}.canaryService", 'service "nope-canary" not found: apply it before the rollout runs'),
            ("warning", f"{S}.stableService", 'service "nope-stable" not found: apply it before the rollout runs'),
        ],
        id="services-not-found",
    ),
]


@pytest.mark.parametrize(("patches", "expected"), ANALYSIS_CASES)
def test_analysis_reference_rules(patches: dict[str, Any], expected: Expected) -> None:
    check(validate_rollout(rollout_with(patches), known=KNOWN), expected)


def test_reference_words_are_shared_with_the_controller() -> None:
    assert service_not_found("x") == 'service "x" not found: apply it before the rollout runs'
    assert template_not_found("t") == 'analysis template "t" not found: apply it before the rollout runs'
    assert template_not_found("t", cluster_scope=True) == (
        'cluster analysis template "t" not found: apply it before the rollout runs'
    )


def test_nothing_known_means_every_reference_is_a_warning() -> None:
    ro = rollout_with(ROUTED, steps(_analysis("success-rate")))
    findings = validate_rollout(ro, known=KnownObjects())
    assert [f.severity for f in findings] == ["warning"] * 3
    assert [f.path for f in findings] == [
        f"{S}.canaryService",
        f"{S}.stableService",
        f"{S}.steps[0].analysis.templates[0].templateName",
    ]


# --- Rollout: blue/green ---------------------------------------------------------------------------------

BLUE_GREEN_CASES = [
    pytest.param(
        {f"{B}.activeService": ""},
        [("error", f"{B}.activeService", "missing (name the Service that receives production traffic)")],
        id="active-service-missing",
    ),
    pytest.param(
        {f"{B}.previewService": "active"},
        [
            (
                "error",
                f"{B}.previewService",
                'is the same Service as activeService ("active"); use two different Services',
            )
        ],
        id="preview-equals-active",
    ),
    pytest.param({f"{B}.previewService": DELETE}, [], id="no-preview-clean"),
    pytest.param(
        {f"{B}.previewReplicaCount": -1},
        [("error", f"{B}.previewReplicaCount", "-1 is negative (use 0 or more)")],
        id="preview-replica-count-negative",
    ),
    pytest.param({f"{B}.previewReplicaCount": 1}, [], id="preview-replica-count-clean"),
    pytest.param(
        {f"{B}.autoPromotionSeconds": -1},
        [("error", f"{B}.autoPromotionSeconds", "-1 is negative (use 0 or more)")],
        id="auto-promotion-seconds-negative",
    ),
    pytest.param({f"{B}.autoPromotionSeconds": 600}, [], id="auto-promotion-seconds-clean"),
    pytest.param(
        {f"{B}.autoPromotionEnabled": False, f"{B}.autoPromotionSeconds": 600},
        [
            (
                "warning",
                f"{B}.autoPromotionSeconds",
                "is ignored because autoPromotionEnabled is false: the rollout waits for a manual promote "
                "(remove one of them)",
            )
        ],
        id="auto-promotion-seconds-ignored",
    ),
    pytest.param(
        {f"{B}.scaleDownDelayRevisionLimit": -1},
        [("error", f"{B}.scaleDownDelayRevisionLimit", "-1 is negative (use 0 or more)")],
        id="revision-limit-negative",
    ),
    pytest.param(
        {f"{B}.scaleDownDelayRevisionLimit": 3, "spec.revisionHistoryLimit": 2},
        [("error", f"{B}.scaleDownDelayRevisionLimit", "3 is more than revisionHistoryLimit (2); …")],
        id="revision-limit-above-history",
    ),
    pytest.param({f"{B}.scaleDownDelayRevisionLimit": 2, f"{B}.scaleDownDelaySeconds": 300}, [], id="delay-clean"),
    pytest.param(
        {f"{B}.scaleDownDelaySeconds": -1},
        [("error", f"{B}.scaleDownDelaySeconds", "-1 is negative (use 0 or more)")],
        id="scale-down-delay-negative",
    ),
    pytest.param(
        {f"{B}.prePromotionAnalysis": {"templates": [{"templateName": "success-rate"}]}},
        [],
        id="pre-promotion-clean",
    ),
    pytest.param(
        {f"{B}.postPromotionAnalysis": {"templates": []}},
        [("error", f"{B}.postPromotionAnalysis.templates", "at least one template is required …")],
        id="post-promotion-no-templates",
    ),
    pytest.param(
        {f"{B}.activeService": "gone"},
        [("warning", f"{B}.activeService", 'service "gone" not found: apply it before the rollout runs')],
        id="active-service-not-found",
    ),
    pytest.param(
        {f"{B}.maxUnavailable": "x"},
        [("error", f"{B}.maxUnavailable", "'x' is not an integer or a percentage …")],
        id="max-unavailable-invalid",
    ),
]


@pytest.mark.parametrize(("patches", "expected"), BLUE_GREEN_CASES)
def test_blue_green_rules(patches: dict[str, Any], expected: Expected) -> None:
    check(validate_rollout(rollout_with(BLUE_GREEN, patches), known=KNOWN), expected)


# --- Rollout: features we cannot run -----------------------------------------------------------------

ROUTER_CONFIGS = {
    "istio": {"virtualService": {"name": "vs"}},
    "alb": {"ingress": "ing", "servicePort": 80},
    "smi": {"rootService": "root"},
    "ambassador": {"mappings": ["m"]},
    "appMesh": {"virtualService": {"name": "vs"}},
    "traefik": {"weightedTraefikServiceName": "t"},
    "apisix": {"route": {"name": "r"}},
}


@pytest.mark.parametrize("router", list(ROUTER_CONFIGS))
def test_other_traffic_routers_are_warnings_only(router: str) -> None:
    ro = rollout_with(ROUTED, {f"{S}.trafficRouting": {router: ROUTER_CONFIGS[router]}})
    check(
        validate_rollout(ro, known=KNOWN),
        [
            (
                "warning",
                f"{S}.trafficRouting.{router}",
                f"the {router} traffic router is not supported by rollouts yet; "
                "the controller will mark this rollout InvalidSpec",
            )
        ],
    )


UNSUPPORTED_CASES = [
    pytest.param(
        {**ROUTED, f"{S}.trafficRouting": {"plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "r"}}}},
        [
            (
                "warning",
                f"{S}.trafficRouting.plugins",
                "traffic routing through plugins is not supported by rollouts yet; …",
            )
        ],
        id="router-plugins",
    ),
    pytest.param(
        steps({"experiment": {"templates": [{"name": "baseline", "specRef": "stable"}], "duration": "5m"}}),
        [("warning", f"{S}.steps[0].experiment", "experiment steps are not supported by rollouts yet; …")],
        id="experiment-step",
    ),
    pytest.param(
        steps({"experiment": {"templates": [{"name": "b", "specRef": "stable", "weight": 5}]}}),
        [
            (
                "error",
                f"{S}.steps[0].experiment.templates[0].weight",
                "needs trafficRouting (remove weight, or add a router)",
            ),
            ("warning", f"{S}.steps[0].experiment", "experiment steps are not supported by rollouts yet; …"),
        ],
        id="experiment-weight-without-routing",
    ),
    pytest.param(
        steps({"plugin": {"name": "argoproj-labs/sample", "config": {}}}),
        [("warning", f"{S}.steps[0].plugin", "step plugins are not supported by rollouts yet; …")],
        id="plugin-step",
    ),
    pytest.param(
        {
            "spec.selector": DELETE,
            "spec.template": DELETE,
            "spec.workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
        },
        [
            (
                "warning",
                "spec.workloadRef",
                "workloadRef (a pod template taken from another workload) is not supported …",
            )
        ],
        id="workload-ref",
    ),
    pytest.param(
        {"spec.workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}},
        [
            ("error", "spec.template", "must be empty when spec.workloadRef is set (use one or the other)"),
            ("warning", "spec.workloadRef", "workloadRef (a pod template taken from another workload) is not …"),
        ],
        id="workload-ref-with-template",
    ),
    pytest.param(
        {
            f"{S}.pingPong": {"pingService": "ping", "pongService": "pong"},
            f"{S}.trafficRouting": {"alb": {"ingress": "i", "servicePort": 80, "rootService": "root"}},
        },
        [
            ("warning", f"{S}.trafficRouting.alb", "the alb traffic router is not supported by rollouts yet; …"),
            ("warning", f"{S}.pingPong", "pingPong services are not supported by rollouts yet; …"),
        ],
        id="ping-pong",
    ),
    pytest.param(
        {
            f"{S}.pingPong": {"pingService": "ping", "pongService": "ping"},
            f"{S}.trafficRouting": {"alb": {"ingress": "i", "servicePort": 80}},
        },
        [
            (
                "error",
                f"{S}.pingPong.pongService",
                'is the same Service as pingService ("ping"); use two different Services',
            ),
            ("error", f"{S}.trafficRouting.alb.rootService", "required with the alb router and pingPong"),
            ("warning", f"{S}.trafficRouting.alb", "the alb traffic router is not supported by rollouts yet; …"),
            ("warning", f"{S}.pingPong", "pingPong services are not supported by rollouts yet; …"),
        ],
        id="ping-pong-invalid",
    ),
    pytest.param(
        {f"{S}.antiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
        [("warning", f"{S}.antiAffinity", "antiAffinity is not supported by rollouts yet; …")],
        id="anti-affinity",
    ),
    pytest.param(
        {f"{S}.antiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 0}}},
        [
            (
                "error",
                f"{S}.antiAffinity.preferredDuringSchedulingIgnoredDuringExecution.weight",
                "0 is not between 1 and 100",
            ),
            ("warning", f"{S}.antiAffinity", "antiAffinity is not supported by rollouts yet; …"),
        ],
        id="anti-affinity-weight",
    ),
    pytest.param(
        {f"{S}.antiAffinity": {}},
        [
            ("error", f"{S}.antiAffinity", "set exactly one of preferredDuringSchedulingIgnoredDuringExecution or …"),
            ("warning", f"{S}.antiAffinity", "antiAffinity is not supported by rollouts yet; …"),
        ],
        id="anti-affinity-empty",
    ),
]


@pytest.mark.parametrize(("patches", "expected"), UNSUPPORTED_CASES)
def test_unsupported_features_are_warnings(patches: dict[str, Any], expected: Expected) -> None:
    check(validate_rollout(rollout_with(patches), known=KNOWN), expected)


def test_blue_green_anti_affinity_is_a_warning() -> None:
    ro = rollout_with(BLUE_GREEN, {f"{B}.antiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}})
    check(
        validate_rollout(ro, known=KNOWN),
        [("warning", f"{B}.antiAffinity", "antiAffinity is not supported by rollouts yet; …")],
    )


# --- Rollout: misspelt fields ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patches", "expected"),
    [
        pytest.param(
            steps({"setWeight": 10}, {"setweight": 20}),
            [
                ("error", f"{S}.steps[1]", "sets no step kind; …"),
                (
                    "warning",
                    f"{S}.steps[1].setweight",
                    "unknown field; did you mean setWeight? (Argo Rollouts ignores unknown fields)",
                ),
            ],
            id="lowercase-step-kind",
        ),
        pytest.param(
            {f"{S}.canarySevice": "canary"},
            [("warning", f"{S}.canarySevice", "unknown field; did you mean canaryService? …")],
            id="typo",
        ),
        pytest.param(
            {"spec.template.spec.containers": [{**CONTAINER, "resources": {}}], f"{S}.someNewArgoField": 1},
            [],
            id="unrelated-unknown-fields-are-fine",
        ),
    ],
)
def test_misspelt_fields_are_warnings(patches: dict[str, Any], expected: Expected) -> None:
    check(validate_rollout(rollout_with(patches), known=KNOWN), expected)


# --- references with the objects at hand -----------------------------------------------------------------


def _service(name: str, selector: dict[str, str]) -> Service:
    resource = parse_resource(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"selector": selector}}
    )
    assert isinstance(resource, Service)
    return resource


def _template(name: str, spec: dict[str, Any], *, cluster: bool = False) -> Any:
    kind = "ClusterAnalysisTemplate" if cluster else "AnalysisTemplate"
    resource = parse_resource(
        {"apiVersion": "argoproj.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )
    assert isinstance(resource, AnalysisTemplate | ClusterAnalysisTemplate)
    return resource


def _metric(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "provider": {"prometheus": {"query": "up"}}, **fields}


TEMPLATES = {
    "rate": _template("rate", {"args": [{"name": "service"}], "metrics": [_metric("rate", interval="30s", count=5)]}),
    "rate-twin": _template("rate-twin", {"metrics": [_metric("rate")]}),
    "forever": _template("forever", {"metrics": [_metric("forever", interval="30s")]}),
    "count-arg": _template(
        "count-arg",
        {"args": [{"name": "count", "value": "0"}], "metrics": [_metric("m", interval="1m", count="{{args.count}}")]},
    ),
    "threshold-1": _template("threshold-1", {"args": [{"name": "t", "value": "1"}], "metrics": [_metric("a")]}),
    "threshold-2": _template("threshold-2", {"args": [{"name": "t", "value": "2"}], "metrics": [_metric("b")]}),
    "parent": _template("parent", {"templates": [{"templateName": "rate-twin"}]}),
}
CLUSTER_TEMPLATES = {"global": _template("global", {"metrics": [_metric("rate")]}, cluster=True)}

REFERENCE_CASES = [
    pytest.param(steps(_analysis("rate", args=[{"name": "service", "value": "s"}])), [], id="clean"),
    pytest.param(
        steps(_analysis("rate")),
        [
            (
                "error",
                f"{S}.steps[0].analysis.args",
                'args.service was not resolved: analysis template "rate" declares it without a value '
                f"(add - name: service, value: ... under {S}.steps[0].analysis.args)",
            )
        ],
        id="arg-not-resolved",
    ),
    pytest.param(
        steps(_analysis("rate", args=[{"name": "service", "valueFrom": {"podTemplateHashValue": "Latest"}}])),
        [],
        id="arg-from-value-from",
    ),
    pytest.param(
        steps(_analysis("rate-twin", "parent", "threshold-1")),
        [],
        id="same-template-twice-through-nesting",
    ),
    pytest.param(
        {
            **steps(
                {
                    "analysis": {
                        "templates": [{"templateName": "rate-twin"}, {"templateName": "global", "clusterScope": True}]
                    }
                }
            )
        },
        [
            (
                "error",
                f"{S}.steps[0].analysis",
                'metric "rate" is defined in both analysis template "rate-twin" and cluster analysis template '
                '"global"; metrics of templates that run together need unique names',
            )
        ],
        id="duplicate-metric-across-templates",
    ),
    pytest.param(
        steps(_analysis("threshold-1", "threshold-2")),
        [
            (
                "error",
                f"{S}.steps[0].analysis",
                'argument "t" has the value \'1\' in analysis template "threshold-1" and …',
            )
        ],
        id="conflicting-arg-values",
    ),
    pytest.param(
        steps(_analysis("threshold-1", "threshold-2", args=[{"name": "t", "value": "3"}])),
        [],
        id="conflicting-arg-values-overridden",
    ),
    pytest.param(
        steps(_analysis("forever")),
        [
            (
                "error",
                f"{S}.steps[0].analysis",
                'analysis template "forever" has metric "forever" which runs indefinitely (an interval without '
                "a count); set count, or run it as background analysis",
            )
        ],
        id="step-analysis-runs-forever",
    ),
    pytest.param({f"{S}.analysis": {"templates": [{"templateName": "forever"}]}}, [], id="background-may-run-forever"),
    pytest.param(
        steps(_analysis("count-arg")),
        [("error", f"{S}.steps[0].analysis", 'analysis template "count-arg" has metric "m" which runs indefinitely …')],
        id="count-placeholder-resolves-to-zero",
    ),
    pytest.param(steps(_analysis("count-arg", args=[{"name": "count", "value": "3"}])), [], id="count-placeholder-set"),
    pytest.param(
        steps(_analysis("rate-twin", dryRun=[{"metricName": "latency.*"}])),
        [
            (
                "error",
                f"{S}.steps[0].analysis.dryRun[0].metricName",
                "'latency.*' matches no metric of the templates (rate)",
            )
        ],
        id="dry-run-matches-nothing",
    ),
    pytest.param(steps(_analysis("rate-twin", dryRun=[{"metricName": ".*"}])), [], id="dry-run-matches"),
    pytest.param(steps(_analysis("not-here")), [], id="missing-template-is-not-checked-here"),
]


@pytest.mark.parametrize(("patches", "expected"), REFERENCE_CASES)
def test_references_to_templates(patches: dict[str, Any], expected: Expected) -> None:
    findings = validate_references(
        rollout_with(patches), services={}, templates=TEMPLATES, cluster_templates=CLUSTER_TEMPLATES
    )
    check(findings, expected)


@pytest.mark.parametrize(
    ("selector", "patches", "expected"),
    [
        pytest.param({"app": "demo"}, {}, [], id="matching"),
        pytest.param({"app": "demo", "rollouts-pod-template-hash": "abc"}, {}, [], id="hash-label-ignored"),
        pytest.param(
            {"app": "demo", "role": "canary"},
            {f"{S}.canaryMetadata": {"labels": {"role": "canary"}}},
            [],
            id="role-metadata-label",
        ),
        pytest.param(
            {"app": "other"},
            {},
            [
                (
                    "error",
                    f"{S}.canaryService",
                    'service "canary" selects app=other, which the pod template labels do not carry, so it would '
                    "reach no pod of this rollout (fix the Service selector or the template labels)",
                )
            ],
            id="mismatch",
        ),
    ],
)
def test_service_selectors_must_fit_the_pod_template(
    selector: dict[str, str], patches: dict[str, Any], expected: Expected
) -> None:
    ro = rollout_with({f"{S}.canaryService": "canary", f"{S}.stableService": "stable"}, patches)
    services = {"canary": _service("canary", selector), "stable": _service("stable", {"app": "demo"})}
    check(validate_references(ro, services=services, templates={}, cluster_templates={}), expected)


# --- AnalysisTemplate -------------------------------------------------------------------------------

TEMPLATE_BASE: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "AnalysisTemplate",
    "metadata": {"name": "t"},
    "spec": {
        "args": [{"name": "service"}],
        "metrics": [
            {
                "name": "error-rate",
                "interval": "30s",
                "count": 5,
                "failureLimit": 1,
                "successCondition": "result[0] < 0.01",
                "provider": {"prometheus": {"address": "http://127.0.0.1:9090", "query": "up"}},
            }
        ],
    },
}
M = "spec.metrics[0]"


def _metric_patch(**fields: Any) -> dict[str, Any]:
    metric = {**TEMPLATE_BASE["spec"]["metrics"][0], **fields}
    return {"spec.metrics": [{k: v for k, v in metric.items() if v is not DELETE}]}


TEMPLATE_CASES = [
    pytest.param({}, [], id="clean"),
    pytest.param(
        {"spec.metrics": []},
        [
            (
                "error",
                "spec.metrics",
                "at least one metric is required (or reference other templates under spec.templates)",
            )
        ],
        id="no-metrics",
    ),
    pytest.param({"spec.metrics": DELETE, "spec.templates": [{"templateName": "other"}]}, [], id="nested-only"),
    pytest.param(
        {"spec.templates": [{"templateName": ""}]},
        [("error", "spec.templates[0].templateName", "empty (name an AnalysisTemplate)")],
        id="nested-empty-name",
    ),
    pytest.param(
        {"spec.metrics": [TEMPLATE_BASE["spec"]["metrics"][0], TEMPLATE_BASE["spec"]["metrics"][0]]},
        [
            (
                "error",
                "spec.metrics[1].name",
                "duplicate metric name 'error-rate' (also spec.metrics[0]); names must be unique",
            )
        ],
        id="duplicate-metric-names",
    ),
    pytest.param(
        _metric_patch(provider={}),
        [("error", f"{M}.provider", "no provider set (add one of prometheus, web, job)")],
        id="no-provider",
    ),
    pytest.param(
        _metric_patch(provider={"prometheus": {"query": "up"}, "web": {"url": "http://x"}}),
        [("error", f"{M}.provider", "sets prometheus and web; a metric uses exactly one provider")],
        id="two-providers",
    ),
    pytest.param(
        _metric_patch(provider={"prometheous": {"query": "up"}}),
        [("error", f"{M}.provider.prometheous", "unknown metric provider (did you mean prometheus?)")],
        id="unknown-provider",
    ),
    pytest.param(
        _metric_patch(provider={"datadog": {"query": "avg:x"}}),
        [
            (
                "warning",
                f"{M}.provider.datadog",
                "the datadog metric provider is not supported by rollouts yet; its measurements will end in Error",
            )
        ],
        id="unsupported-provider",
    ),
    pytest.param(
        _metric_patch(provider={"prometheus": {"address": "http://x"}}),
        [("error", f"{M}.provider.prometheus.query", "missing (write the PromQL query to run)")],
        id="prometheus-without-query",
    ),
    pytest.param(
        _metric_patch(provider={"web": {"jsonPath": "{$.status}"}}),
        [("error", f"{M}.provider.web.url", "missing (the URL to query)")],
        id="web-without-url",
    ),
    pytest.param(
        _metric_patch(provider={"web": {"url": "http://x", "body": "{}"}}),
        [("error", f"{M}.provider.web.method", "a body needs method POST or PUT")],
        id="web-body-with-get",
    ),
    pytest.param(
        _metric_patch(provider={"job": {"spec": {"template": {}}}}),
        [],
        id="job-provider",
    ),
    pytest.param(
        _metric_patch(interval=DELETE),
        [("error", f"{M}.count", "5 measurements need an interval between them (add interval: 30s)")],
        id="count-without-interval",
    ),
    pytest.param(_metric_patch(interval=DELETE, count=1), [], id="single-measurement"),
    pytest.param(_metric_patch(count=DELETE), [], id="unbounded"),
    pytest.param(_metric_patch(count="5"), [], id="count-as-string"),
    pytest.param(_metric_patch(count="{{args.count}}"), [], id="count-placeholder"),
    pytest.param(
        _metric_patch(count="many"),
        [("error", f"{M}.count", "'many' is not an integer (use a number, or an {{args.name}} placeholder)")],
        id="count-not-a-number",
    ),
    pytest.param(
        _metric_patch(count=2, failureLimit=3),
        [("error", f"{M}.count", "2 is less than failureLimit + consecutiveSuccessLimit (3 + 0); raise count")],
        id="count-below-failure-limit",
    ),
    pytest.param(
        _metric_patch(count=2, inconclusiveLimit=3),
        [("error", f"{M}.count", "2 is less than inconclusiveLimit (3); raise count")],
        id="count-below-inconclusive-limit",
    ),
    pytest.param(
        _metric_patch(failureLimit=-2),
        [("error", f"{M}.failureLimit", "-2 is below -1 (use 0 or more, or -1 to never fail)")],
        id="failure-limit-below-minus-one",
    ),
    pytest.param(
        _metric_patch(failureLimit=-1),
        [("error", f"{M}.failureLimit", "-1 turns off failing, so the metric needs consecutiveSuccessLimit above 0 …")],
        id="failure-limit-off-without-success-limit",
    ),
    pytest.param(_metric_patch(failureLimit=-1, consecutiveSuccessLimit=3), [], id="failure-limit-off-clean"),
    pytest.param(
        _metric_patch(consecutiveSuccessLimit=-1),
        [("error", f"{M}.consecutiveSuccessLimit", "-1 is negative (use 0 or more)")],
        id="success-limit-negative",
    ),
    pytest.param(
        _metric_patch(inconclusiveLimit=-1),
        [("error", f"{M}.inconclusiveLimit", "-1 is negative (use 0 or more)")],
        id="inconclusive-limit-negative",
    ),
    pytest.param(
        _metric_patch(consecutiveErrorLimit=-1),
        [("error", f"{M}.consecutiveErrorLimit", "-1 is negative (use 0 or more)")],
        id="error-limit-negative",
    ),
    pytest.param(
        _metric_patch(interval="often"),
        [("error", f"{M}.interval", "invalid duration 'often': …")],
        id="interval-invalid",
    ),
    pytest.param(
        _metric_patch(initialDelay="-5s"),
        [("error", f"{M}.initialDelay", "'-5s' is negative (use e.g. '30s')")],
        id="initial-delay-negative",
    ),
    pytest.param(_metric_patch(interval="{{args.interval}}", initialDelay="1m30s"), [], id="interval-placeholder"),
    pytest.param(
        _metric_patch(successCondition=""),
        [("error", f"{M}.successCondition", "empty (write a condition such as result[0] < 0.01, or remove the field)")],
        id="empty-success-condition",
    ),
    pytest.param(_metric_patch(successCondition=DELETE, failureCondition="result[0] > 0.05"), [], id="failure-only"),
    pytest.param(
        {"spec.args": [{"name": "a"}, {"name": "a", "value": "1"}]},
        [("error", "spec.args[1].name", "duplicate argument 'a' (also spec.args[0])")],
        id="duplicate-args",
    ),
    pytest.param(
        {"spec.args": [{"name": "a", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
        [("error", "spec.args[0]", "sets both value and valueFrom; set one")],
        id="arg-value-and-value-from",
    ),
    pytest.param(
        {"spec.dryRun": [{"metricName": "latency"}]},
        [("error", "spec.dryRun[0].metricName", "'latency' matches no metric (error-rate)")],
        id="dry-run-matches-nothing",
    ),
    pytest.param({"spec.measurementRetention": [{"metricName": "error.*", "limit": 20}]}, [], id="retention-clean"),
    pytest.param(
        {"spec.measurementRetention": [{"metricName": "error.*", "limit": -1}]},
        [("error", "spec.measurementRetention[0].limit", "-1 is negative (use 0 or more)")],
        id="retention-negative",
    ),
    pytest.param(
        _metric_patch(sucessCondition="result[0] > 1"),
        [("warning", f"{M}.sucessCondition", "unknown field; did you mean successCondition? …")],
        id="misspelt-metric-field",
    ),
]


@pytest.mark.parametrize(("patches", "expected"), TEMPLATE_CASES)
def test_analysis_template_rules(patches: dict[str, Any], expected: Expected) -> None:
    resource = parse_resource(patched(TEMPLATE_BASE, patches))
    assert isinstance(resource, AnalysisTemplate)
    check(validate_analysis_template(resource), expected)


def test_cluster_analysis_template_is_checked_the_same_way() -> None:
    raw = patched(TEMPLATE_BASE, {"kind": "ClusterAnalysisTemplate", "spec.metrics": []})
    resource = parse_resource(raw)
    assert isinstance(resource, ClusterAnalysisTemplate)
    findings = validate_analysis_template(resource)
    assert [(f.kind, f.path) for f in findings] == [("ClusterAnalysisTemplate", "spec.metrics")]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param([{"name": "service", "value": "s"}], [], id="clean"),
        pytest.param(
            [{"name": "service"}],
            [("error", "spec.args[0]", "args.service was not resolved (give it a value)")],
            id="arg-without-value",
        ),
    ],
)
def test_analysis_run_rules(args: list[dict[str, Any]], expected: Expected) -> None:
    raw = patched(TEMPLATE_BASE, {"kind": "AnalysisRun", "spec.args": args})
    resource = parse_resource(raw)
    assert isinstance(resource, AnalysisRun)
    check(validate_analysis_run(resource), expected)
