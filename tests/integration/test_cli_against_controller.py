"""The CLI drives a controller running as its own process, through the shared state file.

Canary: apply, update, pause at 50 %, promote, then a second update aborted by hand and
retried; blue/green with manual promotion. Traffic is checked through the real proxy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import ControllerProcess, answers, demo_container, free_port

pytestmark = pytest.mark.integration


def manifests(tmp_path: Path, strategy: dict[str, Any], services: dict[str, int]) -> Path:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": port}]},
        }
        for name, port in services.items()
    ]
    docs.append(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [demo_container("demo:v1")]},
                },
                "strategy": strategy,
            },
        }
    )
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def healthy_on(revision_image: str) -> Any:
    def check(status: dict[str, Any]) -> bool:
        return status.get("phase") == "Healthy" and status.get("stableRS") == status.get("currentPodHash")

    return check


def test_canary_promote_abort_retry(controller: ControllerProcess, tmp_path: Path) -> None:
    stable, canary = free_port(), free_port()
    strategy = {
        "canary": {"stableService": "web", "canaryService": "web-canary", "steps": [{"setWeight": 50}, {"pause": {}}]}
    }
    controller.cli("apply", "-f", str(manifests(tmp_path, strategy, {"web": stable, "web-canary": canary})))
    controller.wait_for("web", healthy_on("v1"))
    url = f"http://127.0.0.1:{stable}/"
    assert answers(url, 10) == {"v1": 10}

    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == 1)
    shown = controller.cli("get", "rollout", "web")
    assert "Status:          ॥ Paused" in shown and "SetWeight:     50" in shown and "ActualWeight:  50" in shown
    assert "demo:v2 (canary)" in shown and "demo:v1 (stable)" in shown
    split = answers(url, 100)
    assert split == {"v1": 50, "v2": 50}, "the proxy splits exactly by weight"
    assert answers(f"http://127.0.0.1:{canary}/", 10) == {"v2": 10}

    controller.cli("promote", "web")
    controller.wait_for("web", healthy_on("v2"))
    assert answers(url, 10) == {"v2": 10}
    assert "Healthy" in controller.cli("status", "web", "--timeout", "10s")

    controller.cli("set", "image", "web", "app=demo:v4")
    controller.wait_for("web", lambda s: s.get("phase") == "Paused")
    controller.cli("abort", "web")
    ro = controller.wait_for("web", lambda s: s.get("phase") == "Degraded")
    assert ro["status"]["message"].startswith("RolloutAborted: Rollout aborted update to revision 3")
    assert answers(url, 20) == {"v2": 20}

    controller.cli("retry", "rollout", "web")
    controller.wait_for("web", lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == 1)
    assert set(answers(url, 20)) == {"v2", "v4"}


def test_blue_green_waits_for_promote(controller: ControllerProcess, tmp_path: Path) -> None:
    active, preview = free_port(), free_port()
    strategy = {
        "blueGreen": {
            "activeService": "web",
            "previewService": "web-preview",
            "autoPromotionEnabled": False,
            "scaleDownDelaySeconds": 2,
        }
    }
    controller.cli("apply", "-f", str(manifests(tmp_path, strategy, {"web": active, "web-preview": preview})))
    controller.wait_for("web", healthy_on("v1"))
    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", lambda s: s.get("phase") == "Paused")
    assert answers(f"http://127.0.0.1:{active}/", 10) == {"v1": 10}
    assert answers(f"http://127.0.0.1:{preview}/", 10) == {"v2": 10}
    shown = controller.cli("get", "rollout", "web")
    assert "Strategy:        BlueGreen" in shown and "active" in shown and "preview" in shown

    controller.cli("promote", "web")
    controller.wait_for("web", healthy_on("v2"))
    assert answers(f"http://127.0.0.1:{active}/", 10) == {"v2": 10}


def test_a_missing_service_applied_later_unblocks_the_rollout(controller: ControllerProcess, tmp_path: Path) -> None:
    port = free_port()
    strategy = {"canary": {"stableService": "web", "steps": [{"setWeight": 50}]}}
    path = manifests(tmp_path, strategy, {"web": port})
    docs = list(yaml.safe_load_all(path.read_text()))
    service, ro = docs[0], docs[1]
    (tmp_path / "ro.yaml").write_text(yaml.safe_dump(ro))
    (tmp_path / "svc.yaml").write_text(yaml.safe_dump(service))
    controller.cli("apply", "-f", str(tmp_path / "ro.yaml"))
    stuck = controller.wait_for("web", lambda s: s.get("phase") == "Degraded")
    assert stuck["status"]["message"] == 'InvalidSpec: service "web" not found: apply it before the rollout runs'
    controller.cli("apply", "-f", str(tmp_path / "svc.yaml"))
    controller.wait_for("web", lambda s: s.get("phase") == "Healthy")
    assert answers(f"http://127.0.0.1:{port}/", 5) == {"v1": 5}
