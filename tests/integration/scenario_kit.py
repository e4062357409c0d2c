"""Shared builders and readers for the end-to-end scenario files (`test_rollout_scenarios*.py`).

A scenario applies Services and a Rollout with the CLI to a controller process (the
`controller` fixture of conftest.py), drives it with the CLI and reads back what Argo's
E2E suites check: ReplicaSet counts by revision, the canary weight the proxy applies (the
stable Service's annotation), the rollout's status and conditions. Everything here reads
the store; nothing waits without a bound.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from rollouts.platform.embedded.objects import (
    CANARY_HASH_ANNOTATION,
    CANARY_WEIGHT_ANNOTATION,
    REVISION_ANNOTATION,
    SCALE_DOWN_DEADLINE_ANNOTATION,
)
from tests.integration.conftest import ControllerProcess, demo_container
from tests.integration.test_rollout_scenarios import listed, wait_until

Obj = dict[str, Any]

# The embedded proxy is the router; naming nginx in the spec is what Argo requires for the
# traffic-routed features (scaleDownDelaySeconds, setCanaryScale, dynamicStableScale).
NGINX = {"nginx": {"stableIngress": "web-ingress"}}
CANARY_SERVICES = {"stableService": "web", "canaryService": "web-canary"}


def service_docs(services: dict[str, int]) -> list[Obj]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": port}]},
        }
        for name, port in services.items()
    ]


def never_ready(image: str) -> Obj:
    """A demo pod that runs but never passes its readiness probe (the path answers 404)."""
    container = demo_container(image)
    container["readinessProbe"] = {"httpGet": {"path": "/never-ready", "port": 8080}, "periodSeconds": 1}
    return container


def rollout_doc(
    strategy: Obj, *, replicas: int = 2, image: str = "demo:v1", container: Obj | None = None, **spec: Any
) -> Obj:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container or demo_container(image)]},
            },
            "strategy": copy.deepcopy(strategy),
            **spec,
        },
    }


def apply_docs(controller: ControllerProcess, tmp_path: Path, docs: list[Obj], name: str = "web.yaml") -> None:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    controller.cli("apply", "-f", str(path))


def deploy(controller: ControllerProcess, tmp_path: Path, services: dict[str, int], rollout: Obj, *extra: Obj) -> None:
    """Apply the Services, any `extra` objects (analysis templates) and the Rollout."""
    apply_docs(controller, tmp_path, [*service_docs(services), *extra, rollout])


def update(controller: ControllerProcess, tmp_path: Path, rollout: Obj) -> None:
    """Re-apply the Rollout (a template change other than `set image`, e.g. a failing probe)."""
    apply_docs(controller, tmp_path, [rollout], name="web-update.yaml")


# --- readers -----------------------------------------------------------------------------------


def by_revision(controller: ControllerProcess) -> dict[int, Obj]:
    """The rollout's ReplicaSets by their revision annotation."""
    return {int(rs["metadata"]["annotations"][REVISION_ANNOTATION]): rs for rs in listed(controller, "ReplicaSet")}


def desired(controller: ControllerProcess) -> dict[int, int]:
    """spec.replicas by revision (Argo's ExpectRevisionPodCount)."""
    return {rev: int(rs["spec"]["replicas"]) for rev, rs in by_revision(controller).items()}


def available(controller: ControllerProcess) -> dict[int, int]:
    return {
        rev: int((rs.get("status") or {}).get("availableReplicas", 0)) for rev, rs in by_revision(controller).items()
    }


def pod_hash(rs: Obj) -> str:
    return str(rs["metadata"]["labels"]["rollouts-pod-template-hash"])


def scale_down_deadline(rs: Obj) -> str | None:
    return (rs["metadata"].get("annotations") or {}).get(SCALE_DOWN_DEADLINE_ANNOTATION)


def service(controller: ControllerProcess, name: str) -> Obj:
    return next(s for s in listed(controller, "Service") if s["metadata"]["name"] == name)


def selector_hash(controller: ControllerProcess, name: str) -> str | None:
    return (service(controller, name)["spec"].get("selector") or {}).get("rollouts-pod-template-hash")


def proxy_weight(controller: ControllerProcess, stable_service: str = "web") -> tuple[int, str | None]:
    """(canary weight, canary revision) in the proxy's routing of the stable Service."""
    notes = service(controller, stable_service)["metadata"].get("annotations") or {}
    return int(notes.get(CANARY_WEIGHT_ANNOTATION, "0")), notes.get(CANARY_HASH_ANNOTATION)


def status_weights(status: Obj) -> tuple[int, int]:
    """(canary, stable) weights recorded in status.canary.weights."""
    weights = (status.get("canary") or {}).get("weights") or {}
    return int(weights["canary"]["weight"]), int(weights["stable"]["weight"])


def condition(status: Obj, type_: str) -> Obj:
    return next(c for c in status.get("conditions") or [] if c["type"] == type_)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/"


def admin_port(controller: ControllerProcess) -> int:
    """The port of the controller's /metrics (from its start-up line)."""
    found: list[int] = []

    def started() -> bool:
        match = re.search(r"metrics http://127\.0\.0\.1:(\d+)/metrics", controller.log.read_text())
        if match:
            found.append(int(match.group(1)))
        return bool(found)

    wait_until("the controller's admin port", started)
    return found[0]
