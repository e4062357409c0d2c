"""End-to-end scenarios on the embedded platform, after Argo Rollouts' E2E suites.

Each case applies a Rollout (and its Services / AnalysisTemplates) with the CLI to a
controller running as its own process, drives it with the CLI, and checks the stored objects
and the traffic through the proxy: promote --full while paused and during a step analysis
(FunctionalSuite TestCanaryPromoteFull), abort → retry → promote (TestRolloutAbortRetryPromote),
undo to the stable revision (fast-tracked), blue/green with previewReplicaCount
(TestBlueGreenPreviewReplicaCount), a failing pre-promotion analysis (TestBlueGreenPrePromotionFail),
the duration and completionStatus of a promoted and an aborted update (DurationSuite), and a
restart (TestRolloutRestart). Every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollouts.core.timeutil import parse_rfc3339
from rollouts.store.sqlite import SqliteStore
from tests.integration.conftest import ControllerProcess, MetricServer, answers, demo_container, free_port

pytestmark = pytest.mark.integration

Status = dict[str, Any]


# --- fixtures and helpers --------------------------------------------------------------------


def web_template(url: str, *, count: int = 5) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "ok"},
        "spec": {
            "metrics": [
                {
                    "name": "ok",
                    "interval": "1s",
                    "count": count,
                    "successCondition": "result == true",
                    "provider": {"web": {"url": url, "jsonPath": "{$.ok}"}},
                }
            ]
        },
    }


def apply(
    controller: ControllerProcess,
    tmp_path: Path,
    strategy: dict[str, Any],
    services: dict[str, int],
    *,
    replicas: int = 2,
    extra: tuple[dict[str, Any], ...] = (),
) -> None:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": port}]},
        }
        for name, port in services.items()
    ]
    docs.extend(extra)
    docs.append(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
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
    controller.cli("apply", "-f", str(path))


def healthy(status: Status) -> bool:
    return status.get("phase") == "Healthy" and status.get("stableRS") == status.get("currentPodHash")


def paused_at(step: int) -> Callable[[Status], bool]:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def listed(controller: ControllerProcess, kind: str) -> list[dict[str, Any]]:
    store = SqliteStore(controller.state)
    try:
        return store.list(kind)
    finally:
        store.close()


def replica_sets(controller: ControllerProcess) -> dict[str, dict[str, Any]]:
    """ReplicaSets by pod-template hash."""
    return {rs["metadata"]["labels"]["rollouts-pod-template-hash"]: rs for rs in listed(controller, "ReplicaSet")}


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def duration(controller: ControllerProcess) -> dict[str, Any]:
    return dict(controller.rollout("web")["status"].get("duration") or {})


CANARY = {"stableService": "web", "canaryService": "web-canary"}


# --- canary ------------------------------------------------------------------------------------


def test_promote_full_while_paused(controller: ControllerProcess, tmp_path: Path) -> None:
    stable, canary = free_port(), free_port()
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    apply(controller, tmp_path, {"canary": {**CANARY, "steps": steps}}, {"web": stable, "web-canary": canary})
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", paused_at(1))
    url = f"http://127.0.0.1:{stable}/"
    assert answers(url, 20) == {"v1": 10, "v2": 10}

    controller.cli("promote", "web", "--full")
    ro = controller.wait_for("web", healthy)
    status = ro["status"]
    assert status["currentStepIndex"] == len(steps) and not status.get("promoteFull")
    assert status["duration"]["completionStatus"] == "FastPromoted"
    assert answers(url, 10) == {"v2": 10}


def test_promote_full_during_step_analysis(
    controller: ControllerProcess, tmp_path: Path, metric_server: MetricServer
) -> None:
    stable = free_port()
    steps = [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "ok"}]}}, {"pause": {}}]
    apply(
        controller,
        tmp_path,
        {"canary": {"stableService": "web", "steps": steps}},
        {"web": stable},
        extra=(web_template(metric_server.url, count=30),),
    )
    controller.wait_for("web", healthy)
    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", lambda s: s.get("currentStepIndex") == 1 and bool(listed(controller, "AnalysisRun")))
    wait_until("a first measurement", lambda: metric_server.calls >= 1)
    (run,) = listed(controller, "AnalysisRun")
    assert (run.get("status") or {}).get("phase", "Running") in ("Pending", "Running")

    controller.cli("promote", "web", "--full")
    ro = controller.wait_for("web", healthy)
    assert ro["status"]["duration"]["completionStatus"] == "FastPromoted"
    assert answers(f"http://127.0.0.1:{stable}/", 10) == {"v2": 10}
    (run,) = listed(controller, "AnalysisRun")
    assert run["spec"].get("terminate") is True, "the step analysis is cancelled by the full promotion"
    wait_until(
        "the cancelled run to complete",
        lambda: (listed(controller, "AnalysisRun")[0].get("status") or {}).get("phase") not in (None, "Running"),
    )
    assert listed(controller, "AnalysisRun")[0]["status"]["phase"] != "Failed"


def test_abort_retry_promote(controller: ControllerProcess, tmp_path: Path) -> None:
    stable, canary = free_port(), free_port()
    steps = [{"setWeight": 50}, {"pause": {}}]
    apply(controller, tmp_path, {"canary": {**CANARY, "steps": steps}}, {"web": stable, "web-canary": canary})
    controller.wait_for("web", healthy)
    url = f"http://127.0.0.1:{stable}/"
    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", paused_at(1))

    controller.cli("abort", "web")
    ro = controller.wait_for("web", lambda s: s.get("phase") == "Degraded")
    assert ro["status"]["currentStepIndex"] == 0 and ro["status"]["abort"] is True
    assert answers(url, 20) == {"v1": 20}, "all traffic back on stable"

    controller.cli("retry", "rollout", "web")
    controller.wait_for("web", paused_at(1))
    assert set(answers(url, 20)) == {"v1", "v2"}

    controller.cli("promote", "web")
    ro = controller.wait_for("web", healthy)
    assert ro["status"]["duration"]["completionStatus"] == "Promoted"
    assert answers(url, 10) == {"v2": 10}
    v2 = ro["status"]["stableRS"]
    wait_until("the old stable to be scaled down", lambda: len(replica_sets(controller)) == 2)
    assert {h: rs["spec"]["replicas"] for h, rs in replica_sets(controller).items()}[v2] == 2


def test_undo_to_the_stable_revision_is_fast_tracked(controller: ControllerProcess, tmp_path: Path) -> None:
    stable, canary = free_port(), free_port()
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    apply(controller, tmp_path, {"canary": {**CANARY, "steps": steps}}, {"web": stable, "web-canary": canary})
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", paused_at(1))["status"]["currentPodHash"]

    controller.cli("undo", "web")
    ro = controller.wait_for("web", lambda s: healthy(s) and s.get("currentPodHash") == v1)
    status = ro["status"]
    assert status["stableRS"] == v1 and status["currentStepIndex"] == len(steps), "no steps run"
    assert status["duration"]["completionStatus"] == "FastRolledBack"
    assert not status.get("pauseConditions")
    url = f"http://127.0.0.1:{stable}/"
    assert answers(url, 10) == {"v1": 10}
    wait_until("the canary to be scaled down", lambda: replica_sets(controller)[v2]["spec"]["replicas"] == 0)
    assert replica_sets(controller)[v1]["spec"]["replicas"] == 2


def test_duration_of_a_promoted_and_an_aborted_update(controller: ControllerProcess, tmp_path: Path) -> None:
    stable = free_port()
    apply(controller, tmp_path, {"canary": {"stableService": "web", "steps": [{"pause": {}}]}}, {"web": stable})
    controller.wait_for("web", healthy)

    controller.cli("set", "image", "web", "app=demo:v2")
    controller.wait_for("web", paused_at(0))
    started = duration(controller)
    assert started.get("rolloutStartedAt") and not started.get("finishedAt")
    time.sleep(1.1)  # timestamps have whole seconds
    controller.cli("promote", "web")
    controller.wait_for("web", healthy)
    promoted = duration(controller)
    assert promoted["completionStatus"] == "Promoted"
    start, finish = parse_rfc3339(promoted["rolloutStartedAt"]), parse_rfc3339(promoted["finishedAt"])
    assert start is not None and finish is not None and finish > start

    controller.cli("set", "image", "web", "app=demo:v3")
    controller.wait_for("web", paused_at(0))
    assert duration(controller).get("completionStatus") is None, "a new update starts a new clock"
    controller.cli("abort", "web")
    controller.wait_for("web", lambda s: s.get("phase") == "Degraded")
    aborted = duration(controller)
    assert aborted["completionStatus"] == "Aborted" and aborted.get("finishedAt")
    start = parse_rfc3339(aborted["rolloutStartedAt"])
    assert start is not None and start >= finish
    assert answers(f"http://127.0.0.1:{stable}/", 10) == {"v2": 10}


# --- blue/green --------------------------------------------------------------------------------


def test_blue_green_preview_replica_count(controller: ControllerProcess, tmp_path: Path) -> None:
    active, preview = free_port(), free_port()
    strategy = {
        "blueGreen": {
            "activeService": "web",
            "previewService": "web-preview",
            "autoPromotionEnabled": False,
            "previewReplicaCount": 1,
            "scaleDownDelaySeconds": 1,
        }
    }
    apply(controller, tmp_path, strategy, {"web": active, "web-preview": preview}, replicas=3)
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    controller.cli("set", "image", "web", "app=demo:v2")
    v2 = controller.wait_for("web", lambda s: s.get("phase") == "Paused")["status"]["currentPodHash"]
    sets = replica_sets(controller)
    assert sets[v2]["spec"]["replicas"] == 1 and sets[v2]["status"]["availableReplicas"] == 1
    assert sets[v1]["spec"]["replicas"] == 3
    assert answers(f"http://127.0.0.1:{preview}/", 10) == {"v2": 10}
    assert answers(f"http://127.0.0.1:{active}/", 10) == {"v1": 10}

    controller.cli("promote", "web")
    ro = controller.wait_for("web", healthy)
    assert ro["status"]["blueGreen"]["activeSelector"] == v2
    assert replica_sets(controller)[v2]["status"]["availableReplicas"] == 3, "scaled fully before the switch"
    assert answers(f"http://127.0.0.1:{active}/", 10) == {"v2": 10}
    wait_until("the old active to be scaled down", lambda: replica_sets(controller)[v1]["spec"]["replicas"] == 0)


def test_blue_green_pre_promotion_failure_aborts(
    controller: ControllerProcess, tmp_path: Path, metric_server: MetricServer
) -> None:
    metric_server.ok = False
    active, preview = free_port(), free_port()
    strategy = {
        "blueGreen": {
            "activeService": "web",
            "previewService": "web-preview",
            "prePromotionAnalysis": {"templates": [{"templateName": "ok"}]},
        }
    }
    apply(
        controller,
        tmp_path,
        strategy,
        {"web": active, "web-preview": preview},
        extra=(web_template(metric_server.url, count=2),),
    )
    v1 = controller.wait_for("web", healthy)["status"]["stableRS"]
    controller.cli("set", "image", "web", "app=demo:v2")
    ro = controller.wait_for("web", lambda s: s.get("phase") == "Degraded")
    status = ro["status"]
    assert status["abort"] is True and status["stableRS"] == v1
    assert "PrePromotion analysis phase failed" in status["message"]
    assert status["blueGreen"]["activeSelector"] == v1
    assert status["duration"]["completionStatus"] == "Aborted"
    (run,) = listed(controller, "AnalysisRun")
    assert run["status"]["phase"] == "Failed" and run["metadata"]["name"].endswith("-pre")
    service = next(s for s in listed(controller, "Service") if s["metadata"]["name"] == "web")
    assert service["spec"]["selector"]["rollouts-pod-template-hash"] == v1
    assert answers(f"http://127.0.0.1:{active}/", 10) == {"v1": 10}


# --- restart -----------------------------------------------------------------------------------


def test_restart_replaces_every_pod_one_at_a_time(controller: ControllerProcess, tmp_path: Path) -> None:
    stable = free_port()
    apply(controller, tmp_path, {"canary": {"stableService": "web", "maxUnavailable": 1}}, {"web": stable})
    controller.wait_for("web", healthy)
    before = {pod["metadata"]["name"] for pod in listed(controller, "Pod")}
    assert len(before) == 2
    time.sleep(1.1)  # restartAt has whole seconds: the pods must be older than it
    controller.cli("restart", "web")
    restart_at = controller.rollout("web")["spec"]["restartAt"]
    ro = controller.wait_for("web", lambda s: s.get("restartedAt") == restart_at and healthy(s), timeout=40)
    assert ro["status"]["availableReplicas"] == 2

    def replaced() -> bool:
        after = {pod["metadata"]["name"] for pod in listed(controller, "Pod")}
        return len(after) == 2 and not (after & before)

    wait_until("the restarted pods to be gone", replaced, timeout=10)
    store = SqliteStore(controller.state)
    try:
        reasons = [e.reason for e in store.events("Rollout", "web", limit=100)]
    finally:
        store.close()
    assert reasons.count("RestartingPod") == 2 and "RestartCompleted" in reasons
    assert answers(f"http://127.0.0.1:{stable}/", 10) == {"v1": 10}
