"""Managed routes end to end on the embedded platform: setHeaderRoute and setMirrorRoute.

A controller runs as its own process; the rollout (with `trafficRouting.managedRoutes` and no
router: the embedded proxy is the router) is applied and driven with the CLI; requests go
through the real proxy to real demo-app pods. At each pause the test checks where requests
with and without the header go, and that the mirror copies half of the matching requests to
the canary (the proxy's counters) while every client is answered by the stable revision; then
that the routes are gone after a promotion and after an abort. Every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollouts.platform.embedded.objects import MANAGED_ROUTES_ANNOTATION
from rollouts.store.sqlite import SqliteStore
from tests.integration.conftest import ControllerProcess, free_port
from tests.integration.scenario_kit import admin_port
from tests.integration.test_rollout_scenarios import apply, healthy, paused_at, wait_until

pytestmark = pytest.mark.integration

BETA = {"X-Beta": "yes"}
STEPS: list[dict[str, Any]] = [
    {"setCanaryScale": {"replicas": 1}},  # weight stays 0: only routed requests reach the canary
    {"setHeaderRoute": {"name": "beta", "match": [{"headerName": "X-Beta", "headerValue": {"exact": "yes"}}]}},
    {"pause": {}},
    {"setMirrorRoute": {"name": "shadow", "percentage": 50, "match": [{"method": {"exact": "GET"}}]}},
    {"pause": {}},
]
STRATEGY = {
    "canary": {
        "stableService": "web",
        "canaryService": "web-canary",
        "trafficRouting": {"managedRoutes": [{"name": "beta"}, {"name": "shadow"}]},
        "steps": STEPS,
    }
}


def versions(url: str, count: int, headers: dict[str, str] | None = None) -> dict[str, int]:
    """Versions answering `count` requests (errors counted under their status code)."""
    seen: dict[str, int] = {}
    with httpx.Client(timeout=5.0) as client:
        for _ in range(count):
            response = client.get(url, headers=headers)
            key = response.json()["version"] if response.status_code == 200 else str(response.status_code)
            seen[key] = seen.get(key, 0) + 1
    return seen


def mirrored(admin: int, revision: str) -> float:
    """Copies the canary pods of `revision` answered (the proxy's counter)."""
    text = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=5.0).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rollouts_proxy_mirrored_requests_total" and sample.labels.get("revision") == revision:
                total += sample.value
    return total


def service_routes(controller: ControllerProcess) -> str | None:
    store = SqliteStore(controller.state)
    try:
        svc = store.must_get("Service", "web")
    finally:
        store.close()
    return (svc["metadata"].get("annotations") or {}).get(MANAGED_ROUTES_ANNOTATION)


def proxy_routes(admin: int) -> list[str]:
    return list(httpx.get(f"http://127.0.0.1:{admin}/stats/web", timeout=5.0).json().get("routes", []))


def settle(what: str, read: Callable[[], float], expected: float) -> None:
    wait_until(what, lambda: read() >= expected)
    time.sleep(0.2)
    assert read() == expected, what


def test_header_and_mirror_routes_through_promotion_and_abort(controller: ControllerProcess, tmp_path: Path) -> None:
    stable_port, canary_port = free_port(), free_port()
    apply(controller, tmp_path, STRATEGY, {"web": stable_port, "web-canary": canary_port})
    admin = admin_port(controller)
    controller.wait_for("web", healthy)
    url = f"http://127.0.0.1:{stable_port}/"

    # v2 at the first pause: the header route only.
    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", paused_at(2))["status"]["currentPodHash"]
    wait_until("the header route in the proxy", lambda: proxy_routes(admin) == ["beta"])
    assert versions(url, 10, BETA) == {"v2": 10}, "header-matched requests go to the canary at weight 0"
    assert versions(url, 10) == {"v1": 10}

    # The second pause: the header route stays, the mirror copies half of the GETs.
    controller.cli("promote", "web")
    controller.wait_for("web", paused_at(4))
    wait_until("the mirror route in the proxy", lambda: proxy_routes(admin) == ["beta", "shadow"])
    assert versions(url, 40) == {"v1": 40}, "clients get the stable's answers"
    settle("20 copies to the canary", lambda: mirrored(admin, v2), 20)
    assert versions(url, 6, BETA) == {"v2": 6}, "the header route comes first: no copies"
    assert mirrored(admin, v2) == 20

    # Promoted: every managed route removed.
    controller.cli("promote", "web")
    controller.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == v2)
    wait_until("the routes to leave the Service", lambda: service_routes(controller) is None)
    wait_until("the routes to leave the proxy", lambda: proxy_routes(admin) == [])
    assert versions(url, 10) == {"v2": 10}
    time.sleep(0.2)
    assert mirrored(admin, v2) == 20, "no more copies"

    # v5 reaches the header route again, then is aborted: the routes go with the abort.
    controller.cli("set", "image", "web", "app=demo:v5")
    controller.wait_for("web", paused_at(2))
    wait_until("the header route in the proxy", lambda: proxy_routes(admin) == ["beta"])
    assert versions(url, 10, BETA) == {"v5": 10}
    assert versions(url, 10) == {"v2": 10}
    controller.cli("abort", "web")
    controller.wait_for("web", lambda s: s.get("phase") == "Degraded")
    wait_until("the routes to leave the Service", lambda: service_routes(controller) is None)
    wait_until("the routes to leave the proxy", lambda: proxy_routes(admin) == [])
    assert versions(url, 10, BETA) == {"v2": 10}, "after an abort the header reaches the stable"
