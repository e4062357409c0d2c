"""The controller as a Kubernetes operator, run as its own process against the API stand-in.

The controller reaches the stand-in through a kubeconfig, exactly as it would a cluster;
the test plays kubectl (writing objects through the stand-in's store, as an API client
would) and the kubelet (`KubeletSim` marks ReplicaSets ready), and asserts on the objects
the stand-in holds — the objects a real API server would hold.
"""

# ruff: noqa: F811
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rollouts.ops import patches
from tests.support.kubeapi.fixtures import KubeletSim, kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer

pytestmark = pytest.mark.integration

HASH = "rollouts-pod-template-hash"


def rollout(image: str, strategy: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
            "strategy": strategy,
        },
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


INGRESS: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "Ingress",
    "metadata": {"name": "web", "namespace": "default", "annotations": {"kubernetes.io/ingress.class": "nginx"}},
    "spec": {
        "rules": [
            {
                "host": "web.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "web", "port": {"number": 80}}},
                        }
                    ]
                },
            }
        ]
    },
}

NGINX_CANARY: dict[str, Any] = {
    "canary": {
        "stableService": "web",
        "canaryService": "web-canary",
        "trafficRouting": {"nginx": {"stableIngress": "web"}},
        "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {"duration": 1}}],
    }
}


class Operator:
    def __init__(self, api: KubeAPIServer, kubeconfig: Path, log: Path) -> None:
        self.api = api
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "rollouts", "controller", "--platform", "kubernetes",
                    "--kubeconfig", str(kubeconfig), "--metrics-port", "0", "--healthz-port", "0",
                    "--bind", "127.0.0.1", "--lease-duration", "6", "--lease-renew-interval", "2",
                ],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def wait_running(self, timeout: float = 90.0) -> None:
        """Until the controller says it runs (leader, informers synced). Start-up is bounded
        apart from the tests' waits, which time the controller's logic, not Python's imports
        on a loaded machine."""
        self.wait_for_log(b"controller running on Kubernetes", timeout)

    def metrics(self) -> str:
        """The controller's /metrics text (its port is in the start-up line)."""
        port = re.search(rb"metrics :(\d+)/metrics", self.log.read_bytes())
        assert port is not None, self.log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{int(port.group(1))}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def wait_for_log(self, marker: bytes, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.log.read_bytes():
            assert self.proc.poll() is None, f"controller exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {marker!r} after {timeout} s:\n{self.log.read_text()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def rollout(self) -> dict[str, Any]:
        return self.api.store.read("rollouts", "default", "web")

    def wait(self, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ro = self.rollout()
            if check(ro.get("status") or {}):
                return ro
            assert self.proc.poll() is None, f"controller exited:\n{self.log.read_text()[-3000:]}"
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; status {ro.get('status')}\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.1)

    def write_status(self, change: Callable[[dict[str, Any]], patches.Patch]) -> None:
        """What `rollouts promote`/`abort` write: the status subresource, with the version read."""
        patch = change(self.rollout())
        self.api.store.update("rollouts", patch.obj, "default", subresource="status")

    def set_image(self, image: str) -> None:
        ro = self.rollout()
        ro["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.api.store.update("rollouts", ro, "default")


@pytest.fixture
def operator(kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path) -> Iterator[Operator]:
    with KubeletSim(kube_api):
        op = Operator(kube_api, kubeconfig, tmp_path / "controller.log")
        op.wait_running()
        try:
            yield op
        finally:
            op.stop()


def healthy(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Healthy" and status.get("stableRS") == status.get("currentPodHash")


def canary_weight(api: KubeAPIServer) -> str | None:
    ingress = api.store.get("ingresses", "default", "web-web-canary")
    if ingress is None:
        return None
    return str(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"])


def test_nginx_canary_through_every_step_to_promotion(operator: Operator, kube_api: KubeAPIServer) -> None:
    for obj in (service("web"), service("web-canary"), INGRESS, rollout("web:v1", NGINX_CANARY)):
        kube_api.store.create(str(obj["kind"]), obj)
    first = operator.wait(healthy, "the first revision to be healthy")
    v1 = first["status"]["stableRS"]
    (rs,) = kube_api.store.list("replicasets", "default")
    assert rs["metadata"]["name"] == f"web-{v1}"
    assert rs["metadata"]["labels"][HASH] == v1
    assert rs["metadata"]["annotations"]["rollout.argoproj.io/revision"] == "1"
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Rollout"
    assert rs["metadata"]["ownerReferences"][0]["uid"] == first["metadata"]["uid"]
    assert kube_api.store.read("services", "default", "web")["spec"]["selector"][HASH] == v1

    operator.set_image("web:v2")
    paused = operator.wait(lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == 1, "the first pause")
    v2 = paused["status"]["currentPodHash"]
    assert canary_weight(kube_api) == "20"
    canary_ingress = kube_api.store.read("ingresses", "default", "web-web-canary")
    assert canary_ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary"] == "true"
    backend = canary_ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "web-canary"
    assert kube_api.store.read("services", "default", "web-canary")["spec"]["selector"][HASH] == v2
    assert kube_api.store.read("services", "default", "web")["spec"]["selector"][HASH] == v1
    replicas = {
        r["metadata"]["labels"][HASH]: r["spec"]["replicas"] for r in kube_api.store.list("replicasets", "default")
    }
    assert replicas == {v1: 4, v2: 1}
    assert paused["status"]["observedGeneration"] == str(paused["metadata"]["generation"])

    operator.write_status(patches.promote)
    done = operator.wait(healthy, "promotion", timeout=40)
    assert done["status"]["stableRS"] == v2
    assert done["status"]["duration"]["completionStatus"] == "Promoted"
    assert canary_weight(kube_api) == "0"
    assert kube_api.store.read("services", "default", "web")["spec"]["selector"][HASH] == v2
    events = [e for e in kube_api.store.list("events", "default") if e["involvedObject"]["name"] == "web"]
    assert {"RolloutUpdated", "RolloutStepCompleted", "RolloutCompleted"} <= {e["reason"] for e in events}
    # Counted just after the status write the wait above saw: give the controller a moment.
    promoted = 'rollout_duration_seconds_count{namespace="default",status="Promoted"} 1.0'
    deadline = time.monotonic() + 10
    while promoted not in (metrics := operator.metrics()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert promoted in metrics
    assert 'rollout_reconcile_count{name="web",namespace="default"}' in metrics


def test_abort_returns_all_traffic_to_stable(operator: Operator, kube_api: KubeAPIServer) -> None:
    for obj in (service("web"), service("web-canary"), INGRESS, rollout("web:v1", NGINX_CANARY)):
        kube_api.store.create(str(obj["kind"]), obj)
    v1 = operator.wait(healthy, "the first revision")["status"]["stableRS"]
    operator.set_image("web:v2")
    operator.wait(lambda s: s.get("phase") == "Paused", "the first pause")
    operator.write_status(patches.abort)
    aborted = operator.wait(lambda s: s.get("phase") == "Degraded", "the abort")
    assert aborted["status"]["message"].startswith("RolloutAborted")
    assert canary_weight(kube_api) == "0"
    assert kube_api.store.read("services", "default", "web")["spec"]["selector"][HASH] == v1


def test_blue_green_switches_active_service_on_promote(operator: Operator, kube_api: KubeAPIServer) -> None:
    strategy = {"blueGreen": {"activeService": "web", "previewService": "web-canary", "autoPromotionEnabled": False}}
    for obj in (service("web"), service("web-canary"), rollout("web:v1", strategy)):
        kube_api.store.create(str(obj["kind"]), obj)
    v1 = operator.wait(healthy, "the first revision")["status"]["stableRS"]
    operator.set_image("web:v2")
    paused = operator.wait(lambda s: s.get("phase") == "Paused", "the blue/green pause")
    v2 = paused["status"]["currentPodHash"]
    assert kube_api.store.read("services", "default", "web")["spec"]["selector"][HASH] == v1
    assert kube_api.store.read("services", "default", "web-canary")["spec"]["selector"][HASH] == v2
    operator.write_status(patches.promote)
    operator.wait(healthy, "the cutover")
    assert kube_api.store.read("services", "default", "web")["spec"]["selector"][HASH] == v2


def test_the_first_revision_is_healthy_when_the_watch_outruns_the_create(
    operator: Operator, kube_api: KubeAPIServer
) -> None:
    """The kubelet's status reaches the controller on its ReplicaSet watch before the answer to
    its create does (a busy controller reads its sockets in any order). The late answer must not
    put the status-less ReplicaSet back in the cache: the controller then waited forever, silent,
    for a readiness it had already been told of."""
    release = kube_api.hold_next("POST", r"/namespaces/default/replicasets$")
    kube_api.store.create("rollouts", rollout("web:v1", {"canary": {"steps": [{"setWeight": 50}]}}))
    deadline = time.monotonic() + 30
    while not any((rs.get("status") or {}).get("readyReplicas") for rs in kube_api.store.list("replicasets")):
        assert time.monotonic() < deadline, f"no ready ReplicaSet:\n{operator.log.read_text()[-3000:]}"
        time.sleep(0.05)
    time.sleep(0.5)  # the controller reads the watch events now: it waits on nothing else
    release.set()
    done = operator.wait(healthy, "the first revision to be healthy")
    (rs,) = kube_api.store.list("replicasets", "default")
    assert rs["metadata"]["name"] == f"web-{done['status']['stableRS']}"
