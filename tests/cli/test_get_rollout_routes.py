"""`rollouts get rollout` shows the managed routes in effect (setHeaderRoute / setMirrorRoute),
as the Argo dashboard shows a canary's route steps: only while the update is in flight, in
precedence order, gone once the update is promoted or aborted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rollouts.cli.info import build_info
from rollouts.cli.render import render_rollout

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {
        "setHeaderRoute": {
            "name": "canary-header",
            "match": [
                {"headerName": "X-Canary", "headerValue": {"exact": "yes"}},
                {"headerName": "User-Agent", "headerValue": {"regex": ".*Android.*"}},
            ],
        }
    },
    {
        "setMirrorRoute": {
            "name": "mirror-api",
            "percentage": 50,
            "match": [{"method": {"exact": "GET"}, "path": {"prefix": "/api"}}],
        }
    },
    {"pause": {}},
    {"setHeaderRoute": {"name": "canary-header"}},  # no match: removes the route
    {"pause": {}},
]


def rollout(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default", "generation": 2},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "a"}]},
            },
            "strategy": {
                "canary": {
                    "stableService": "web",
                    "canaryService": "web-canary",
                    # managedRoutes order is precedence: the mirror route comes first.
                    "trafficRouting": {"managedRoutes": [{"name": "mirror-api"}, {"name": "canary-header"}]},
                    "steps": STEPS,
                }
            },
        },
        "status": {"observedGeneration": "2", "phase": "Paused", "stableRS": "v1", "currentPodHash": "v2", **status},
    }


HEADER = 'HeaderRoute:   canary-header: X-Canary exact "yes" or User-Agent regex ".*Android.*"'
MIRROR = 'MirrorRoute:   mirror-api: 50% of method exact "GET" and path prefix "/api"'


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({"currentStepIndex": 0}, [], id="before-the-route-steps"),
        pytest.param({"currentStepIndex": 1}, [HEADER], id="header-route-applied"),
        pytest.param({"currentStepIndex": 3}, [MIRROR, HEADER], id="both-in-precedence-order"),
        pytest.param({"currentStepIndex": 5}, [MIRROR], id="header-route-removed-by-a-later-step"),
        pytest.param({"currentStepIndex": 3, "abort": True}, [], id="aborted"),
        pytest.param({"currentStepIndex": 6, "stableRS": "v2"}, [], id="promoted"),
    ],
)
def test_get_rollout_shows_routes_in_effect(status: dict[str, Any], expected: list[str]) -> None:
    text = render_rollout(build_info(rollout(**status), [], [], []), now=datetime(2026, 11, 26, tzinfo=UTC))
    lines = text.splitlines()
    shown = [line.strip() for line in lines if line.strip().startswith(("HeaderRoute:", "MirrorRoute:"))]
    assert shown == expected
    if expected:
        # Under the canary's step details, after ActualWeight.
        first = next(i for i, line in enumerate(lines) if line.strip() == expected[0])
        assert lines[first - 1].strip().startswith("ActualWeight:")
