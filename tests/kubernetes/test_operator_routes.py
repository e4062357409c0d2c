"""Managed routes on Kubernetes: setHeaderRoute as NGINX canary-by-header annotations.

The controller runs as its own process against the API stand-in (see `test_operator`). The
canary Ingress gets `canary-by-header` with `-value` (exact) or `-pattern` (prefix, regex) at a
header-route step, keeps it through later steps, loses it when a step removes the route, on
promotion and on abort; a mirror route, which NGINX cannot express, completes with a Warning
event. Assertions read the objects the stand-in holds.
"""

# ruff: noqa: F811
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rollouts.ops import patches
from tests.kubernetes.test_operator import (  # noqa: F401  (`operator` is a fixture)
    INGRESS,
    Operator,
    healthy,
    operator,
    rollout,
    service,
)
from tests.support.kubeapi.fixtures import KubeletSim, kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer

pytestmark = pytest.mark.integration

P = "nginx.ingress.kubernetes.io"
BY_HEADER = (f"{P}/canary-by-header", f"{P}/canary-by-header-value", f"{P}/canary-by-header-pattern")


def header_step(name: str, **value: str) -> dict[str, Any]:
    return {"setHeaderRoute": {"name": name, "match": [{"headerName": "X-Beta", "headerValue": value}]}}


ROUTED: dict[str, Any] = {
    "canary": {
        "stableService": "web",
        "canaryService": "web-canary",
        "trafficRouting": {"nginx": {"stableIngress": "web"}, "managedRoutes": [{"name": "beta"}, {"name": "shadow"}]},
        "steps": [
            {"setWeight": 20},
            header_step("beta", exact="yes"),
            {"pause": {}},  # 2
            header_step("beta", prefix="tester-"),
            {"setMirrorRoute": {"name": "shadow", "percentage": 10, "match": [{"method": {"exact": "GET"}}]}},
            {"pause": {}},  # 5
            {"setHeaderRoute": {"name": "beta"}},  # no match: removes the route
            {"pause": {}},  # 7
            header_step("beta", regex="v[0-9]+"),
            {"pause": {}},  # 9
        ],
    }
}


def paused_at(step: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def by_header(api: KubeAPIServer) -> dict[str, str]:
    """The canary Ingress's canary-by-header annotations (and its weight)."""
    notes = api.store.read("ingresses", "default", "web-web-canary")["metadata"]["annotations"]
    found = {key.rsplit("/", 1)[1]: value for key, value in notes.items() if key in BY_HEADER}
    found["canary-weight"] = notes[f"{P}/canary-weight"]
    return dict(found)


def warnings(api: KubeAPIServer) -> list[str]:
    events = api.store.list("events", "default")
    return [e["reason"] for e in events if e["involvedObject"]["name"] == "web" and e["type"] == "Warning"]


def start(operator: Operator, api: KubeAPIServer) -> None:
    for obj in (service("web"), service("web-canary"), INGRESS, rollout("web:v1", ROUTED)):
        api.store.create(str(obj["kind"]), obj)
    operator.wait(healthy, "the first revision")
    operator.set_image("web:v2")


def test_header_route_annotations_follow_the_steps(operator: Operator, kube_api: KubeAPIServer) -> None:
    start(operator, kube_api)
    operator.wait(paused_at(2), "the first pause")
    assert by_header(kube_api) == {"canary-by-header": "X-Beta", "canary-by-header-value": "yes", "canary-weight": "20"}

    operator.write_status(patches.promote)
    operator.wait(paused_at(5), "the second pause")
    assert by_header(kube_api) == {
        "canary-by-header": "X-Beta",
        "canary-by-header-pattern": r"^tester\-.*",
        "canary-weight": "20",
    }, "replaced by name; a prefix is an anchored pattern"
    assert warnings(kube_api).count("MirrorRouteNotSupported") == 1, "said once, not per reconcile"
    assert "NGINX canary Ingresses cannot mirror traffic" in operator.log.read_text()

    operator.write_status(patches.promote)
    operator.wait(paused_at(7), "the third pause")
    assert by_header(kube_api) == {"canary-weight": "20"}, "the step without match removed the route"

    operator.write_status(patches.promote)
    operator.wait(paused_at(9), "the fourth pause")
    assert by_header(kube_api) == {
        "canary-by-header": "X-Beta",
        "canary-by-header-pattern": "^(?:v[0-9]+)$",
        "canary-weight": "20",
    }, "a regex must match the whole value, as in Istio"

    operator.write_status(patches.promote)
    operator.wait(healthy, "promotion", timeout=40)
    assert by_header(kube_api) == {"canary-weight": "0"}, "every managed route removed on promotion"


def test_abort_removes_the_header_route(operator: Operator, kube_api: KubeAPIServer) -> None:
    start(operator, kube_api)
    operator.wait(paused_at(2), "the first pause")
    assert by_header(kube_api)["canary-by-header-value"] == "yes"
    operator.write_status(patches.abort)
    operator.wait(lambda s: s.get("phase") == "Degraded", "the abort")
    assert by_header(kube_api) == {"canary-weight": "0"}
