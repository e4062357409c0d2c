"""Managed routes (setHeaderRoute / setMirrorRoute): which are in effect, and the planner carrying them.

`active_routes` is a pure replay of the route steps up to the current step, so its cases are a
table (spec + status -> routes); the planner cases drive `Sim` through whole updates and read
the routes of the last `SetCanaryWeight`. Also: the routes' JSON form (the embedded platform
keeps it on the stable Service).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rollouts.core import plan as p
from rollouts.core.routes import (
    ActiveRoute,
    HeaderMatch,
    HeaderRoute,
    MirrorRoute,
    RequestMatch,
    RouteFormatError,
    ValueMatch,
    active_routes,
    routes_from_json,
    routes_json,
    routes_to_json,
)
from rollouts.model.rollout import Rollout, RolloutStatus
from rollouts.ops import patches
from tests.core.sim import Sim, canary_rollout

# --- active_routes: a table -----------------------------------------------------------------------

H1: dict[str, Any] = {
    "setHeaderRoute": {"name": "h", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}
}
H2: dict[str, Any] = {
    "setHeaderRoute": {"name": "h", "match": [{"headerName": "X-Beta", "headerValue": {"prefix": "tester-"}}]}
}
H_OFF: dict[str, Any] = {"setHeaderRoute": {"name": "h"}}
M1: dict[str, Any] = {
    "setMirrorRoute": {
        "name": "m",
        "percentage": 50,
        "match": [
            {"method": {"exact": "GET"}, "path": {"prefix": "/api"}},
            {"headers": {"X-Mirror": {"regex": "on|yes"}}},
        ],
    }
}
M_OFF: dict[str, Any] = {"setMirrorRoute": {"name": "m", "match": []}}
W20: dict[str, Any] = {"setWeight": 20}
PAUSE: dict[str, Any] = {"pause": {}}

ROUTE_H1 = HeaderRoute("h", (HeaderMatch("X-Canary", ValueMatch("exact", "yes")),))
ROUTE_H2 = HeaderRoute("h", (HeaderMatch("X-Beta", ValueMatch("prefix", "tester-")),))
ROUTE_M1 = MirrorRoute(
    "m",
    50,
    (
        RequestMatch(method=ValueMatch("exact", "GET"), path=ValueMatch("prefix", "/api")),
        RequestMatch(headers=(HeaderMatch("X-Mirror", ValueMatch("regex", "on|yes")),)),
    ),
)

IN_FLIGHT: dict[str, Any] = {"stableRS": "old", "currentPodHash": "new"}


def rollout(steps: list[dict[str, Any]], *, managed: list[str] | None = None, **status: Any) -> Rollout:
    """`managed`: the managedRoutes names (default h, m; [] for none)."""
    manifest = canary_rollout(steps)
    names = ["h", "m"] if managed is None else managed
    if names:
        manifest["spec"]["strategy"]["canary"]["trafficRouting"] = {"managedRoutes": [{"name": n} for n in names]}
    manifest["status"] = status
    return Rollout.model_validate(manifest)


CASES = [
    pytest.param(rollout([H1, PAUSE], managed=[], **IN_FLIGHT, currentStepIndex=1), (), id="no-managed-routes"),
    pytest.param(rollout([H1, PAUSE], currentStepIndex=1), (), id="no-stable-yet"),
    pytest.param(
        rollout([H1, PAUSE], stableRS="new", currentPodHash="new", currentStepIndex=2), (), id="fully-promoted"
    ),
    pytest.param(rollout([H1, PAUSE], **IN_FLIGHT, currentStepIndex=0, abort=True), (), id="aborted"),
    pytest.param(rollout([W20, PAUSE, H1, PAUSE], **IN_FLIGHT, currentStepIndex=1), (), id="before-the-route-step"),
    pytest.param(rollout([W20, H1, PAUSE], **IN_FLIGHT, currentStepIndex=1), (ROUTE_H1,), id="at-the-route-step"),
    pytest.param(
        rollout([H1, PAUSE, W20, PAUSE], **IN_FLIGHT, currentStepIndex=3), (ROUTE_H1,), id="kept-through-later-steps"
    ),
    pytest.param(
        rollout([H1, PAUSE, W20, PAUSE], **IN_FLIGHT, currentStepIndex=4),
        (ROUTE_H1,),
        id="kept-after-the-last-step-until-promoted",
    ),
    pytest.param(rollout([H1, PAUSE, H2, PAUSE], **IN_FLIGHT, currentStepIndex=3), (ROUTE_H2,), id="replaced-by-name"),
    pytest.param(rollout([H1, PAUSE, H2, PAUSE], **IN_FLIGHT, currentStepIndex=1), (ROUTE_H1,), id="not-yet-replaced"),
    pytest.param(rollout([H1, PAUSE, H_OFF, PAUSE], **IN_FLIGHT, currentStepIndex=3), (), id="removed-by-no-match"),
    pytest.param(
        rollout([H1, M1, PAUSE, M_OFF, PAUSE], **IN_FLIGHT, currentStepIndex=4),
        (ROUTE_H1,),
        id="removed-by-empty-match-list",
    ),
    pytest.param(
        rollout([H1, M1, PAUSE], managed=["m", "h"], **IN_FLIGHT, currentStepIndex=2),
        (ROUTE_M1, ROUTE_H1),
        id="ordered-by-managed-routes",
    ),
    pytest.param(
        rollout([H1, M1, PAUSE], managed=["h", "m"], **IN_FLIGHT, currentStepIndex=2),
        (ROUTE_H1, ROUTE_M1),
        id="ordered-by-managed-routes-2",
    ),
    pytest.param(rollout([H1, PAUSE], managed=["m"], **IN_FLIGHT, currentStepIndex=1), (), id="unmanaged-name-ignored"),
    pytest.param(rollout([H1, PAUSE], **IN_FLIGHT), (ROUTE_H1,), id="no-step-index-is-step-0"),
    pytest.param(
        rollout([H1, PAUSE], **IN_FLIGHT, currentStepIndex=9), (ROUTE_H1,), id="index-past-the-end-is-clamped"
    ),
    pytest.param(
        rollout([{"setMirrorRoute": {"name": "m", "match": [{"method": {"exact": "POST"}}]}}], **IN_FLIGHT),
        (MirrorRoute("m", 100, (RequestMatch(method=ValueMatch("exact", "POST")),)),),
        id="mirror-percentage-defaults-to-100",
    ),
    pytest.param(
        rollout(
            [
                {
                    "setHeaderRoute": {
                        "name": "h",
                        "match": [{"headerName": "x", "headerValue": {"exact": "a", "regex": "b"}}],
                    }
                }
            ],
            **IN_FLIGHT,
        ),
        (HeaderRoute("h", (HeaderMatch("x", ValueMatch("exact", "a")),)),),
        id="exact-wins-over-regex",
    ),
    pytest.param(
        rollout(
            [
                {
                    "setHeaderRoute": {
                        "name": "h",
                        "match": [
                            {"headerName": "x", "headerValue": {}},
                            {"headerName": "y", "headerValue": {"regex": "v[0-9]+"}},
                        ],
                    }
                }
            ],
            **IN_FLIGHT,
        ),
        (HeaderRoute("h", (HeaderMatch("y", ValueMatch("regex", "v[0-9]+")),)),),
        id="match-without-value-left-out",
    ),
    pytest.param(
        rollout([{"setHeaderRoute": {"name": "h", "match": [{"headerName": "x", "headerValue": {}}]}}], **IN_FLIGHT),
        (),
        id="no-usable-match-is-no-route",
    ),
    pytest.param(
        rollout([{"setMirrorRoute": {"name": "m", "match": [{"method": {}}, {"path": {"exact": "/x"}}]}}], **IN_FLIGHT),
        (MirrorRoute("m", 100, (RequestMatch(path=ValueMatch("exact", "/x")),)),),
        id="mirror-block-with-empty-condition-left-out",
    ),
]


@pytest.mark.parametrize(("ro", "expected"), CASES)
def test_active_routes(ro: Rollout, expected: tuple[ActiveRoute, ...]) -> None:
    assert active_routes(ro) == expected


def test_active_routes_takes_the_status_given() -> None:
    ro = rollout([H1, PAUSE], **IN_FLIGHT, currentStepIndex=1)
    assert active_routes(ro, RolloutStatus.model_validate({**IN_FLIGHT, "abort": True})) == ()
    assert active_routes(ro, RolloutStatus.model_validate(IN_FLIGHT)) == (ROUTE_H1,)


# --- JSON form ----------------------------------------------------------------------------------------


def test_json_round_trip_keeps_order_and_content() -> None:
    routes = (ROUTE_M1, ROUTE_H1)
    text = routes_json(routes)
    assert routes_from_json(text) == routes
    assert routes_from_json(routes_to_json(routes)) == routes
    assert routes_json(routes) == routes_json(tuple(copy.deepcopy(list(routes)))), "canonical"
    assert routes_json(()) == "[]"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("{", "not JSON", id="not-json"),
        pytest.param("{}", "expected a list of routes", id="not-a-list"),
        pytest.param('[{"kind": "header"}]', "routes[0]: expected an object with a name", id="no-name"),
        pytest.param('[{"kind": "x", "name": "a", "match": [{}]}]', "routes[0].kind", id="bad-kind"),
        pytest.param('[{"kind": "header", "name": "a", "match": []}]', "routes[0].match", id="empty-match"),
        pytest.param(
            '[{"kind": "header", "name": "a", "match": [{"headerName": "x", "headerValue": {"exact": 1}}]}]',
            "routes[0].match[0].headerValue",
            id="bad-value",
        ),
        pytest.param(
            '[{"kind": "mirror", "name": "a", "percentage": 101, "match": [{}]}]',
            "routes[0].percentage",
            id="bad-percentage",
        ),
    ],
)
def test_json_errors_name_the_bad_part(raw: str, message: str) -> None:
    with pytest.raises(RouteFormatError) as err:
        routes_from_json(raw)
    assert message in str(err.value)


# --- the planner ------------------------------------------------------------------------------------


class RouteSim(Sim):
    """`Sim` that also keeps the routes of the last SetCanaryWeight (the router's state)."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        super().__init__(manifest)
        self.routes: tuple[ActiveRoute, ...] = ()
        self.route_actions = 0

    def _apply(self, action: p.Action) -> None:
        if isinstance(action, p.SetCanaryWeight):
            self.routes = action.routes
            self.route_actions += 1
        super()._apply(action)

    def current(self) -> tuple[ActiveRoute, ...]:
        """The routes in effect (a call, so that mypy does not narrow them between reconciles)."""
        return self.routes

    def promote(self) -> None:
        self.status = patches.promote(self.rollout().to_json()).obj["status"]

    def abort(self) -> None:
        self.status = patches.abort(self.rollout().to_json()).obj["status"]


STEPS: list[dict[str, Any]] = [W20, H1, M1, PAUSE, {"setWeight": 50}, PAUSE]


def routed(steps: list[dict[str, Any]] = STEPS) -> RouteSim:
    manifest = canary_rollout(steps)
    manifest["spec"]["strategy"]["canary"]["trafficRouting"] = {"managedRoutes": [{"name": "m"}, {"name": "h"}]}
    sim = RouteSim(manifest)
    sim.converge()
    assert sim.phase == "Healthy" and sim.current() == ()
    return sim


def test_routes_applied_at_their_step_and_kept_until_promotion() -> None:
    sim = routed()
    sim.set_image("app:v2")
    sim.converge()
    assert sim.step == 3 and sim.phase == "Paused"
    assert sim.current() == (ROUTE_M1, ROUTE_H1), "both routes, by managedRoutes precedence"
    assert "RolloutStepCompleted" in sim.events
    sim.promote()
    sim.converge()
    assert sim.step == 5 and sim.weight == 50
    assert sim.current() == (ROUTE_M1, ROUTE_H1), "kept through later steps"
    sim.promote()
    sim.converge()
    assert sim.phase == "Healthy"
    assert sim.current() == (), "all managed routes removed once fully promoted"


def test_route_steps_complete_in_the_reconcile_that_applies_them() -> None:
    sim = routed([H1, PAUSE])
    sim.set_image("app:v2")
    sim.reconcile()
    assert sim.step == 1 and sim.current() == (ROUTE_H1,)
    assert sim.last is not None and sim.last.requeue_after == 0


def test_abort_removes_routes_and_retry_restores_them() -> None:
    sim = routed()
    sim.set_image("app:v2")
    sim.converge()
    assert sim.current() == (ROUTE_M1, ROUTE_H1)
    sim.abort()
    sim.converge()
    assert sim.phase == "Degraded" and sim.current() == () and sim.weight == 0
    sim.status = patches.retry(sim.rollout().to_json()).obj["status"]
    sim.converge()
    assert sim.step == 3 and sim.current() == (ROUTE_M1, ROUTE_H1)


def test_new_update_restarts_without_routes() -> None:
    sim = routed([W20, PAUSE, H1, PAUSE])
    sim.set_image("app:v2")
    sim.converge()
    sim.promote()
    sim.converge()
    assert sim.step == 3 and sim.current() == (ROUTE_H1,)
    sim.set_image("app:v3")
    sim.converge()
    assert sim.step == 1 and sim.current() == (), "steps restart: the route step is not reached yet"


def test_without_managed_routes_no_routes_are_sent() -> None:
    sim = RouteSim(canary_rollout([W20, PAUSE]))
    sim.converge()
    sim.set_image("app:v2")
    sim.converge()
    assert sim.route_actions > 0 and sim.current() == ()
