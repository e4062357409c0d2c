"""Ephemeral metadata as a Kubernetes operator: the controller process against the API stand-in.

`KubeletSim(create_pods=True)` creates each ReplicaSet's Pods from its template, as the
ReplicaSet controller would. The test asserts on what the stand-in holds: the ReplicaSets'
templates and bookkeeping annotation, and the labels/annotations of the Pods, which the
controller updates in place (the same Pod objects, same UIDs) when a ReplicaSet changes role.
"""

# ruff: noqa: F811
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rollouts.core.metadata import EPHEMERAL_ANNOTATION
from rollouts.ops import patches
from tests.kubernetes.test_operator import HASH, Operator, healthy, rollout, service
from tests.support.kubeapi.fixtures import KubeletSim, kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer

pytestmark = pytest.mark.integration

STRATEGY: dict[str, Any] = {
    "canary": {
        "stableService": "web",
        "canaryService": "web-canary",
        "steps": [{"setWeight": 25}, {"pause": {}}],
        "canaryMetadata": {"labels": {"role": "canary"}, "annotations": {"note": "canary"}},
        "stableMetadata": {"labels": {"role": "stable"}},
    }
}


@pytest.fixture
def operator(kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path) -> Iterator[Operator]:
    with KubeletSim(kube_api, create_pods=True) as kubelet:
        op = Operator(kube_api, kubeconfig, tmp_path / "controller.log")
        op.wait_running()
        try:
            yield op
        finally:
            op.stop()
        assert kubelet.errors == []


def pods(api: KubeAPIServer, pod_hash: str) -> list[dict[str, Any]]:
    return [p for p in api.store.list("pods", "default") if (p["metadata"].get("labels") or {}).get(HASH) == pod_hash]


def roles(api: KubeAPIServer, pod_hash: str) -> list[tuple[str | None, str | None]]:
    return [
        ((p["metadata"].get("labels") or {}).get("role"), (p["metadata"].get("annotations") or {}).get("note"))
        for p in pods(api, pod_hash)
    ]


def replica_set(api: KubeAPIServer, pod_hash: str) -> dict[str, Any]:
    return api.store.read("replicasets", "default", f"web-{pod_hash}")


def wait_until(op: Operator, what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert op.proc.poll() is None, f"controller exited:\n{op.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{op.log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_canary_and_stable_metadata_on_replica_sets_and_pods(operator: Operator, kube_api: KubeAPIServer) -> None:
    for obj in (service("web"), service("web-canary"), rollout("web:v1", STRATEGY)):
        kube_api.store.create(str(obj["kind"]), obj)
    v1 = operator.wait(healthy, "the first revision")["status"]["stableRS"]
    wait_until(operator, "the stable pods' role", lambda: roles(kube_api, v1) == [("stable", None)] * 4)
    rs = replica_set(kube_api, v1)
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", HASH: v1, "role": "stable"}
    assert json.loads(rs["metadata"]["annotations"][EPHEMERAL_ANNOTATION]) == {"labels": {"role": "stable"}}
    assert "role" not in rs["metadata"]["labels"], "the ReplicaSet's own labels are not role labels"

    operator.set_image("web:v2")
    v2 = operator.wait(lambda s: s.get("phase") == "Paused", "the canary pause")["status"]["currentPodHash"]
    wait_until(operator, "the canary pod's role", lambda: roles(kube_api, v2) == [("canary", "canary")])
    template = replica_set(kube_api, v2)["spec"]["template"]["metadata"]
    assert template["labels"]["role"] == "canary" and template["annotations"] == {"note": "canary"}
    assert roles(kube_api, v1) == [("stable", None)] * 3, "a basic canary: 25% of 4 moved to the canary"
    canary_uid = pods(kube_api, v2)[0]["metadata"]["uid"]

    operator.write_status(patches.promote)
    operator.wait(healthy, "promotion", timeout=40)
    wait_until(operator, "the promoted pods' role", lambda: roles(kube_api, v2) == [("stable", None)] * 4)
    assert canary_uid in {p["metadata"]["uid"] for p in pods(kube_api, v2)}, "updated in place, not replaced"
    promoted = replica_set(kube_api, v2)
    assert promoted["spec"]["template"]["metadata"]["labels"]["role"] == "stable"
    assert "annotations" not in promoted["spec"]["template"]["metadata"], "the canary's annotation is removed"
    assert json.loads(promoted["metadata"]["annotations"][EPHEMERAL_ANNOTATION]) == {"labels": {"role": "stable"}}
    old = replica_set(kube_api, v1)
    assert "role" not in old["spec"]["template"]["metadata"]["labels"]
    assert EPHEMERAL_ANNOTATION not in old["metadata"]["annotations"]
    wait_until(operator, "the old stable's pods to lose their role", lambda: set(roles(kube_api, v1)) <= {(None, None)})

    # Steady state: a reconcile (of a spec change that leaves the template alone) writes no
    # ReplicaSet or Pod. The stand-in records the controller's requests (KubeletSim's are not HTTP).
    kube_api.clear_requests()
    ro = operator.rollout()
    ro["spec"]["revisionHistoryLimit"] = 5
    kube_api.store.update("rollouts", ro, "default")
    generation = str(operator.rollout()["metadata"]["generation"])
    operator.wait(lambda s: s.get("observedGeneration") == generation, "the spec change to be observed")
    writes = [r for r in kube_api.requests if r.method in ("PUT", "PATCH", "POST", "DELETE")]
    assert not [r for r in writes if "/replicasets" in r.path or "/pods" in r.path], writes


def test_removing_the_spec_field_removes_the_injected_keys(operator: Operator, kube_api: KubeAPIServer) -> None:
    strategy = {"blueGreen": {"activeService": "web", "activeMetadata": {"labels": {"role": "active"}}}}
    manifest = rollout("web:v1", strategy)
    manifest["spec"]["template"]["metadata"]["labels"]["team"] = "payments"
    for obj in (service("web"), manifest):
        kube_api.store.create(str(obj["kind"]), obj)
    v1 = operator.wait(healthy, "the first revision")["status"]["stableRS"]
    wait_until(operator, "the active pods' role", lambda: roles(kube_api, v1) == [("active", None)] * 4)

    ro = operator.rollout()
    del ro["spec"]["strategy"]["blueGreen"]["activeMetadata"]
    kube_api.store.update("rollouts", ro, "default")
    wait_until(operator, "the role label to go", lambda: roles(kube_api, v1) == [(None, None)] * 4)
    rs = replica_set(kube_api, v1)
    assert EPHEMERAL_ANNOTATION not in (rs["metadata"].get("annotations") or {})
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", "team": "payments", HASH: v1}
    assert all(p["metadata"]["labels"]["team"] == "payments" for p in pods(kube_api, v1)), "user labels stay"
    assert operator.rollout()["status"]["stableRS"] == v1, "the pod-template hash did not change"
