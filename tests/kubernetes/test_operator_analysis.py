"""Analysis on Kubernetes: the operator process, the API stand-in and a real Prometheus.

The controller runs as its own process against the stand-in (see test_operator.py); the
AnalysisTemplates query a real Prometheus whose history is backfilled before it starts, so a
metric passes or fails for certain. Assertions read the objects the stand-in holds: the
AnalysisRun the controller created and drove to its phase, the Rollout's status, the Services,
the canary Ingress, the ReplicaSets and the core/v1 Events — and what `rollouts get rollout
--platform kubernetes` shows of them. (The `job` provider on a cluster: test_job_provider.py.)
"""

# ruff: noqa: F811
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rollouts.cli.main import cli
from rollouts.core.timeutil import parse_rfc3339
from tests.kubernetes.test_operator import (  # noqa: F401  (`operator` is a fixture)
    HASH,
    INGRESS,
    Operator,
    canary_weight,
    healthy,
    operator,
    rollout,
    service,
)
from tests.support.kubeapi.fixtures import kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer
from tests.support.prometheus import PrometheusNotInstalled, PrometheusServer, constant_series

pytestmark = pytest.mark.integration

SUCCESS_RATE = "rollouts_k8s_test_success_rate"  # {service="good"} 0.99, {service="bad"} 0.5
ABORT_DELAY = 3  # abortScaleDownDelaySeconds in these tests


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(workdir=tmp_path_factory.mktemp("prometheus"))
    try:
        server.backfill(
            [
                constant_series(SUCCESS_RATE, 0.99, labels={"service": "good"}),
                constant_series(SUCCESS_RATE, 0.5, labels={"service": "bad"}),
            ]
        )
        server.start()
    except PrometheusNotInstalled as exc:
        pytest.fail(f"Prometheus is needed for these tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def template(prometheus: PrometheusServer) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "success-rate", "namespace": "default"},
        "spec": {
            "args": [{"name": "service"}],
            "metrics": [
                {
                    "name": "success-rate",
                    "interval": "1s",
                    "count": 2,
                    "failureLimit": 0,
                    "successCondition": "result[0] >= 0.95",
                    "provider": {
                        "prometheus": {
                            "address": prometheus.url,
                            "query": f'{SUCCESS_RATE}{{service="{{{{args.service}}}}"}}',
                        }
                    },
                }
            ],
        },
    }


def analysis(service_name: str) -> dict[str, Any]:
    return {"templates": [{"templateName": "success-rate"}], "args": [{"name": "service", "value": service_name}]}


def create(api: KubeAPIServer, *objects: dict[str, Any]) -> None:
    for obj in objects:
        api.store.create(str(obj["kind"]), obj)


def replica_sets(api: KubeAPIServer) -> dict[str, dict[str, Any]]:
    return {rs["metadata"]["labels"][HASH]: rs for rs in api.store.list("replicasets", "default")}


def selector(api: KubeAPIServer, name: str) -> str:
    return str(api.store.read("services", "default", name)["spec"]["selector"].get(HASH))


def analysis_runs(api: KubeAPIServer) -> list[dict[str, Any]]:
    return api.store.list("analysisruns", "default")


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in status.get("conditions") or [] if c["type"] == kind]
    assert len(found) == 1, status.get("conditions")
    return found[0]


def events_about(api: KubeAPIServer, name: str) -> list[dict[str, Any]]:
    return [e for e in api.store.list("events", "default") if e["involvedObject"]["name"] == name]


def assert_scaled_down_after_the_delay(api: KubeAPIServer, pod_hash: str, aborted: dict[str, Any]) -> None:
    """The aborted ReplicaSet keeps its pods until abortedAt + abortScaleDownDelaySeconds, then goes to 0."""
    assert replica_sets(api)[pod_hash]["spec"]["replicas"] > 0, "scaled down before the delay"
    aborted_at = parse_rfc3339(aborted["status"]["abortedAt"])
    assert aborted_at is not None
    wait_until("the aborted ReplicaSet to scale down", lambda: replica_sets(api)[pod_hash]["spec"]["replicas"] == 0)
    assert datetime.now(UTC) >= aborted_at + timedelta(seconds=ABORT_DELAY)


# --- canary: a failing step analysis aborts -------------------------------------------------------


def test_failing_step_analysis_aborts_the_canary(
    operator: Operator, kube_api: KubeAPIServer, kubeconfig: Path, prometheus: PrometheusServer
) -> None:
    strategy = {
        "canary": {
            "stableService": "web",
            "canaryService": "web-canary",
            "trafficRouting": {"nginx": {"stableIngress": "web"}},
            "abortScaleDownDelaySeconds": ABORT_DELAY,
            "steps": [{"setWeight": 20}, {"analysis": analysis("bad")}, {"setWeight": 60}, {"pause": {}}],
        }
    }
    create(kube_api, template(prometheus), service("web"), service("web-canary"), INGRESS, rollout("web:v1", strategy))
    v1 = operator.wait(healthy, "the first revision")["status"]["stableRS"]
    assert analysis_runs(kube_api) == [], "no analysis on the initial deploy"

    operator.set_image("web:v2")
    aborted = operator.wait(lambda s: s.get("phase") == "Degraded", "the analysis to abort the update")
    status = aborted["status"]
    v2 = status["currentPodHash"]
    assert v2 != v1

    (run,) = analysis_runs(kube_api)
    assert run["metadata"]["name"] == f"web-{v2}-2-1"
    labels = run["metadata"]["labels"]
    assert (labels["rollout-type"], labels["step-index"], labels[HASH]) == ("Step", "1", v2)
    assert run["metadata"]["ownerReferences"][0]["uid"] == aborted["metadata"]["uid"]
    assert run["status"]["phase"] == "Failed"
    (metric,) = run["status"]["metricResults"]
    assert metric["phase"] == "Failed" and metric["failed"] >= 1
    assert metric["measurements"][0]["value"] == "[0.5]"

    assert status["abort"] is True and status["abortedAt"]
    assert status["stableRS"] == v1 and status["currentStepIndex"] == 0
    assert status["message"].startswith("RolloutAborted: Rollout aborted update to revision 2: ")
    assert "Step-based analysis phase failed" in status["message"]
    progressing = condition(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "RolloutAborted")
    assert status["duration"]["completionStatus"] == "Aborted"

    assert canary_weight(kube_api) == "0"
    assert selector(kube_api, "web") == v1
    assert replica_sets(kube_api)[v1]["spec"]["replicas"] == 4
    assert_scaled_down_after_the_delay(kube_api, v2, aborted)

    # Events: the controller recorded the transitions as core/v1 Events about the Rollout ...
    events = events_about(kube_api, "web")
    by_reason = {e["reason"]: e for e in events}
    assert {"RolloutUpdated", "AnalysisRunCreated", "RolloutAborted"} <= set(by_reason)
    assert by_reason["RolloutAborted"]["type"] == "Warning"
    assert by_reason["RolloutAborted"]["involvedObject"]["uid"] == aborted["metadata"]["uid"]
    assert "Step-based analysis phase failed" in by_reason["RolloutAborted"]["message"]
    # ... and `rollouts get rollout` on the cluster shows them, with the failed run.
    result = CliRunner().invoke(
        cli, ["--platform", "kubernetes", "--kubeconfig", str(kubeconfig), "get", "rollout", "web"]
    )
    assert result.exit_code == 0, result.output
    assert "Degraded" in result.output
    assert f"web-{v2}-2-1" in result.output and "Failed" in result.output
    shown = result.output.split("Events:", 1)[1]
    assert "RolloutAborted" in shown and "Warning" in shown


# --- blue/green: pre-promotion analysis gates the switch ---------------------------------------------


def blue_green(service_name: str) -> dict[str, Any]:
    return {
        "blueGreen": {
            "activeService": "web",
            "previewService": "web-preview",
            "prePromotionAnalysis": analysis(service_name),
            "abortScaleDownDelaySeconds": ABORT_DELAY,
        }
    }


def test_passing_pre_promotion_analysis_switches_the_active_service(
    operator: Operator, kube_api: KubeAPIServer, prometheus: PrometheusServer
) -> None:
    create(
        kube_api, template(prometheus), service("web"), service("web-preview"), rollout("web:v1", blue_green("good"))
    )
    v1 = operator.wait(healthy, "the first revision")["status"]["stableRS"]
    operator.set_image("web:v2")
    switched_early: list[str] = []

    def switched() -> bool:
        # The Service first, then the run: a switch seen before the run passed is a real early switch.
        if selector(kube_api, "web") == v1:
            return False
        phases = [(r.get("status") or {}).get("phase") for r in analysis_runs(kube_api)]
        if phases != ["Successful"]:
            switched_early.append(f"active switched while the pre-promotion runs were {phases}")
        return True

    wait_until("the active Service to switch", switched)
    assert not switched_early, switched_early
    done = operator.wait(healthy, "the promotion")
    v2 = done["status"]["stableRS"]
    assert v2 != v1 and selector(kube_api, "web") == v2
    (run,) = analysis_runs(kube_api)
    assert run["metadata"]["name"] == f"web-{v2}-2-pre"
    assert run["metadata"]["labels"]["rollout-type"] == "PrePromotion"
    assert run["status"]["phase"] == "Successful"
    assert run["status"]["metricResults"][0]["measurements"][0]["value"] == "[0.99]"
    assert done["status"]["blueGreen"]["activeSelector"] == v2
    assert {"AnalysisRunCreated", "SwitchService"} <= {e["reason"] for e in events_about(kube_api, "web")}


def test_failing_pre_promotion_analysis_aborts_and_keeps_the_active_service(
    operator: Operator, kube_api: KubeAPIServer, prometheus: PrometheusServer
) -> None:
    create(kube_api, template(prometheus), service("web"), service("web-preview"), rollout("web:v1", blue_green("bad")))
    v1 = operator.wait(healthy, "the first revision")["status"]["stableRS"]
    operator.set_image("web:v2")
    aborted = operator.wait(lambda s: s.get("phase") == "Degraded", "the analysis to abort the update")
    status = aborted["status"]
    v2 = status["currentPodHash"]
    (run,) = analysis_runs(kube_api)
    assert run["metadata"]["name"] == f"web-{v2}-2-pre" and run["status"]["phase"] == "Failed"
    assert status["abort"] is True and status["stableRS"] == v1
    assert "PrePromotion analysis phase failed" in status["message"]
    progressing = condition(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "RolloutAborted")
    assert status["blueGreen"]["activeSelector"] == v1
    assert selector(kube_api, "web") == v1, "the active Service never left the stable revision"
    assert replica_sets(kube_api)[v1]["spec"]["replicas"] == 4
    assert_scaled_down_after_the_delay(kube_api, v2, aborted)
    assert selector(kube_api, "web") == v1
