"""Ephemeral metadata end to end on the embedded platform: a controller process, the CLI, the store.

Canary: while the canary runs its pods carry canaryMetadata and the stable pods stableMetadata;
after promotion the same canary pods (not restarted) carry stableMetadata and the old stable's
pods none. A Service that selects the role label shows that the proxy routes by the pods'
current labels. Blue/green: previewMetadata on the preview pods, then activeMetadata on the
same pods once promoted. Every wait is bounded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rollouts.core.metadata import EPHEMERAL_ANNOTATION
from tests.integration.conftest import ControllerProcess, answers, free_port
from tests.integration.test_rollout_scenarios import apply, healthy, listed, paused_at, replica_sets, wait_until

pytestmark = pytest.mark.integration

HASH = "rollouts-pod-template-hash"


def pods_of(controller: ControllerProcess, pod_hash: str) -> list[dict[str, Any]]:
    return [p for p in listed(controller, "Pod") if (p["metadata"].get("labels") or {}).get(HASH) == pod_hash]


def roles(controller: ControllerProcess, pod_hash: str) -> list[tuple[str | None, str | None]]:
    """(role label, note annotation) of each pod of the revision."""
    return [
        ((p["metadata"].get("labels") or {}).get("role"), (p["metadata"].get("annotations") or {}).get("note"))
        for p in pods_of(controller, pod_hash)
    ]


def role_service(port: int) -> dict[str, Any]:
    """A Service the controller does not manage, selecting whichever pods carry role=canary."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web-role-canary"},
        "spec": {"selector": {"app": "web", "role": "canary"}, "ports": [{"port": port}]},
    }


def test_canary_pods_carry_canary_then_stable_metadata(controller: ControllerProcess, tmp_path: Path) -> None:
    stable, canary, by_role = free_port(), free_port(), free_port()
    strategy = {
        "canary": {
            "stableService": "web",
            "canaryService": "web-canary",
            "steps": [{"setWeight": 50}, {"pause": {}}],
            "canaryMetadata": {"labels": {"role": "canary"}, "annotations": {"note": "canary"}},
            "stableMetadata": {"labels": {"role": "stable"}, "annotations": {"note": "stable"}},
        }
    }
    apply(controller, tmp_path, strategy, {"web": stable, "web-canary": canary}, extra=(role_service(by_role),))
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    wait_until("the stable pods to carry stableMetadata", lambda: roles(controller, v1) == [("stable", "stable")] * 2)
    notes = replica_sets(controller)[v1]["metadata"]["annotations"]
    assert json.loads(notes[EPHEMERAL_ANNOTATION]) == {"labels": {"role": "stable"}, "annotations": {"note": "stable"}}
    role_url = f"http://127.0.0.1:{by_role}/"
    assert answers(role_url, 3) == {"503": 3}, "no pod is the canary yet"

    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", paused_at(1))["status"]["currentPodHash"]
    wait_until("the canary pod to carry canaryMetadata", lambda: roles(controller, v2) == [("canary", "canary")])
    assert roles(controller, v1) == [("stable", "stable")] * 2
    template = replica_sets(controller)[v2]["spec"]["template"]["metadata"]
    assert template["labels"]["role"] == "canary" and template["annotations"]["note"] == "canary"
    assert template["labels"]["app"] == "web"
    wait_until("the role Service to reach the canary", lambda: answers(role_url, 5) == {"v2": 5})
    canary_pod = pods_of(controller, v2)[0]
    assert answers(f"http://127.0.0.1:{stable}/", 20) == {"v1": 10, "v2": 10}, "pinned Services still select"

    controller.cli("promote", "web")
    controller.wait_for("web", healthy)
    wait_until(
        "the new stable's pods to carry stableMetadata", lambda: roles(controller, v2) == [("stable", "stable")] * 2
    )
    same = next(p for p in pods_of(controller, v2) if p["metadata"]["name"] == canary_pod["metadata"]["name"])
    assert same["metadata"]["uid"] == canary_pod["metadata"]["uid"], "relabelled in place, not restarted"
    assert same["status"]["pids"] == canary_pod["status"]["pids"]
    wait_until("the old stable's pods to lose their role", lambda: set(roles(controller, v1)) <= {(None, None)})
    old = replica_sets(controller)[v1]
    assert EPHEMERAL_ANNOTATION not in (old["metadata"].get("annotations") or {})
    assert "role" not in old["spec"]["template"]["metadata"]["labels"]
    assert old["spec"]["template"]["metadata"]["labels"]["app"] == "web", "the template's own labels stay"
    wait_until("the role Service to have no canary", lambda: answers(role_url, 3) == {"503": 3})
    assert answers(f"http://127.0.0.1:{stable}/", 10) == {"v2": 10}


def test_blue_green_preview_pods_become_active(controller: ControllerProcess, tmp_path: Path) -> None:
    active, preview = free_port(), free_port()
    strategy = {
        "blueGreen": {
            "activeService": "web",
            "previewService": "web-preview",
            "autoPromotionEnabled": False,
            "previewMetadata": {"labels": {"role": "preview"}},
            "activeMetadata": {"labels": {"role": "active"}},
        }
    }
    apply(controller, tmp_path, strategy, {"web": active, "web-preview": preview})
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    wait_until("the active pods to carry activeMetadata", lambda: roles(controller, v1) == [("active", None)] * 2)

    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", lambda s: s.get("phase") == "Paused")["status"]["currentPodHash"]
    wait_until("the preview pods to carry previewMetadata", lambda: roles(controller, v2) == [("preview", None)] * 2)
    assert roles(controller, v1) == [("active", None)] * 2
    preview_pods = {p["metadata"]["uid"] for p in pods_of(controller, v2)}
    assert answers(f"http://127.0.0.1:{preview}/", 5) == {"v2": 5}

    controller.cli("promote", "web")
    controller.wait_for("web", healthy)
    wait_until("the promoted pods to carry activeMetadata", lambda: roles(controller, v2) == [("active", None)] * 2)
    assert {p["metadata"]["uid"] for p in pods_of(controller, v2)} == preview_pods, "the same pods, relabelled"
    wait_until("the old active's pods to lose their role", lambda: set(roles(controller, v1)) <= {(None, None)})
    assert answers(f"http://127.0.0.1:{active}/", 5) == {"v2": 5}
