"""The operator survives what an API server does to clients: broken watches, 410 Gone,
conflicting status writes, and a leader that dies.

Each case runs the real controller process(es) against the stand-in and checks the rollout
still reaches the right state from the objects the stand-in holds.
"""

# ruff: noqa: F811
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.kubernetes.test_operator import INGRESS, NGINX_CANARY, Operator, healthy, rollout, service
from tests.support.kubeapi.fixtures import KubeletSim, kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer

pytestmark = pytest.mark.integration

HASH = "rollouts-pod-template-hash"


def create_all(api: KubeAPIServer) -> None:
    for obj in (service("web"), service("web-canary"), INGRESS, rollout("web:v1", NGINX_CANARY)):
        api.store.create(str(obj["kind"]), obj)


def test_watch_breaks_and_410_are_survived(kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path) -> None:
    with KubeletSim(kube_api):
        op = Operator(kube_api, kubeconfig, tmp_path / "controller.log")
        op.wait_running()
        try:
            create_all(kube_api)
            op.wait(healthy, "the first revision")
            kube_api.wait_for_watches()
            assert kube_api.break_watches() > 0  # the connections drop mid-stream
            kube_api.expire_history()  # and the versions the controller saw are gone: 410 on resume
            op.set_image("web:v2")
            paused = op.wait(lambda s: s.get("phase") == "Paused", "the update to be seen after the breaks")
            assert paused["status"]["currentStepIndex"] == 1
            assert "resuming" in op.log.read_text() or "listing again" in op.log.read_text()
        finally:
            op.stop()


def test_a_conflicting_status_write_is_retried_on_fresh_data(
    kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path
) -> None:
    with KubeletSim(kube_api):
        op = Operator(kube_api, kubeconfig, tmp_path / "controller.log")
        op.wait_running()
        try:
            create_all(kube_api)
            op.wait(healthy, "the first revision")
            kube_api.fail_next("PUT", r"/rollouts/web/status$", 409, times=2)
            op.set_image("web:v2")
            paused = op.wait(lambda s: s.get("phase") == "Paused", "the update despite two 409s")
            assert paused["status"]["currentStepIndex"] == 1
            puts = [r for r in kube_api.requests if r[0] == "PUT" and r[1].endswith("/rollouts/web/status")]
            assert len(puts) >= 3
        finally:
            op.stop()


def test_leader_hand_over(kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path) -> None:
    with KubeletSim(kube_api):
        first = Operator(kube_api, kubeconfig, tmp_path / "first.log")
        first.wait_running()
        try:
            create_all(kube_api)
            first.wait(healthy, "the first revision")
            second = Operator(kube_api, kubeconfig, tmp_path / "second.log")
            try:
                second.wait_for_log(b"is waiting (lease")  # the second one runs and waits for the Lease
                lease = kube_api.store.read("leases", "default", "rollouts-controller")
                leader = lease["spec"]["holderIdentity"]
                os.killpg(first.proc.pid, signal.SIGKILL)
                first.proc.wait(timeout=5)
                second.set_image("web:v2")
                # The lease lasts 6 s: the follower must have taken over well within the wait.
                second.wait(lambda s: s.get("phase") == "Paused", "the new leader to act", timeout=40)
                lease = kube_api.store.read("leases", "default", "rollouts-controller")
                assert lease["spec"]["holderIdentity"] != leader
                assert int(lease["spec"]["leaseTransitions"]) >= 1
            finally:
                second.stop()
        finally:
            first.stop()
