"""A controller's scope on a cluster: `--namespace` and `--instance-id`, as operator processes.

The controllers run as their own processes against the API stand-in (see test_operator.py);
the test plays kubectl and the kubelet through the stand-in's store (no HTTP), so the
stand-in's request log holds the controllers' requests only: "never wrote to team-b" is
checked on every request made, not only on the objects that happen to be there at the end.
Analysis measures a small loopback HTTP endpoint with the `web` provider.
"""

# ruff: noqa: F811
from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from rollouts.cli.main import _controller_scope, cli, controller
from rollouts.model.scope import INSTANCE_ID_LABEL
from tests.kubernetes.test_operator import Operator
from tests.support.kubeapi.fixtures import KubeletSim, kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
STEPS = [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "ok"}]}}]


class ScopedOperator(Operator):
    """`Operator` with extra controller flags, an identity, and no POD_NAMESPACE from the test's env."""

    def __init__(self, api: KubeAPIServer, kubeconfig: Path, log: Path, identity: str, *flags: str) -> None:
        self.api = api
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "POD_NAMESPACE"}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "rollouts", "controller", "--platform", "kubernetes",
                    "--kubeconfig", str(kubeconfig), "--metrics-port", "0", "--healthz-port", "0",
                    "--bind", "127.0.0.1", "--lease-duration", "6", "--lease-renew-interval", "2",
                    "--identity", identity, *flags,
                ],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
            )  # fmt: skip


@pytest.fixture
def operators() -> Iterator[list[ScopedOperator]]:
    started: list[ScopedOperator] = []
    try:
        yield started
    finally:
        for op in started:
            op.stop()


@pytest.fixture
def ok_url() -> Iterator[str]:
    """A loopback endpoint answering {"ok": true}: the metric every analysis here measures."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def rollout(name: str, namespace: str = "default", instance: str | None = None, image: str = "web:v1") -> Obj:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {INSTANCE_ID_LABEL: instance} if instance else {},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": {"canary": {"steps": STEPS}},
        },
    }


def template(url: str) -> Obj:
    metric = {
        "name": "ok",
        "interval": "1s",
        "count": 1,
        "successCondition": "result == true",
        "provider": {"web": {"url": url, "jsonPath": "{$.ok}"}},
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "ok", "namespace": "default"},
        "spec": {"metrics": [metric]},
    }


def status(api: KubeAPIServer, name: str, namespace: str = "default") -> Obj:
    return dict(api.store.read("rollouts", namespace, name).get("status") or {})


def healthy_at(api: KubeAPIServer, name: str, image: str, namespace: str = "default") -> bool:
    ro = api.store.read("rollouts", namespace, name)
    s = ro.get("status") or {}
    return (
        s.get("phase") == "Healthy"
        and s.get("stableRS") == s.get("currentPodHash")
        and s.get("observedGeneration") == str(ro["metadata"].get("generation"))
        and ro["spec"]["template"]["spec"]["containers"][0]["image"] == image
    )


def wait_until(ops: list[ScopedOperator], what: str, check: Callable[[], bool], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for op in ops:
            assert op.proc.poll() is None, f"controller exited:\n{op.log.read_text()[-3000:]}"
        if time.monotonic() > deadline:
            logs = "\n".join(op.log.read_text()[-2000:] for op in ops)
            raise AssertionError(f"timed out waiting for {what}\n{logs}\n{cluster_state(ops[0].api)}")
        time.sleep(0.1)


def cluster_state(api: KubeAPIServer) -> str:
    """What a timed-out wait could not see in a silent controller's log: the Rollouts and
    ReplicaSets as stored (with resourceVersions), and the controllers' last requests."""
    lines = ["rollouts:"]
    for ro in api.store.list("rollouts"):
        s = ro.get("status") or {}
        lines.append(
            f"  {ro['metadata']['namespace']}/{ro['metadata']['name']} rv {ro['metadata']['resourceVersion']} "
            f"gen {ro['metadata'].get('generation')}: phase {s.get('phase')} step {s.get('currentStepIndex')} "
            f"observed {s.get('observedGeneration')} message {s.get('message')!r}"
        )
    lines.append("replicasets:")
    for rs in api.store.list("replicasets"):
        s = rs.get("status") or {}
        lines.append(
            f"  {rs['metadata']['namespace']}/{rs['metadata']['name']} rv {rs['metadata']['resourceVersion']}: "
            f"spec {rs['spec'].get('replicas')} ready {s.get('readyReplicas', 0)}"
        )
    lines.append("the controllers' last requests:")
    lines += [f"  {r.method} {r.path} {r.query or ''}" for r in api.requests[-40:]]
    return "\n".join(lines)


def set_image(api: KubeAPIServer, name: str, image: str, namespace: str = "default") -> None:
    ro = api.store.read("rollouts", namespace, name)
    ro["spec"]["template"]["spec"]["containers"][0]["image"] = image
    api.store.update("rollouts", ro, namespace)


def runs_of(api: KubeAPIServer, name: str) -> list[Obj]:
    return [
        run
        for run in api.store.list("analysisruns", "default")
        if any(ref["name"] == name for ref in run["metadata"].get("ownerReferences") or [])
    ]


def writes(api: KubeAPIServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in api.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]


# --- --namespace ------------------------------------------------------------------------------------


def test_a_namespaced_controller_never_reads_or_writes_another_namespace(
    kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path, operators: list[ScopedOperator]
) -> None:
    for ns in ("team-a", "team-b"):
        kube_api.store.create("namespaces", {"metadata": {"name": ns}})
        body = rollout("web", ns)
        body["spec"]["strategy"] = {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": 1}}]}}
        kube_api.store.create("rollouts", body, ns)
    kube_api.clear_requests()
    with KubeletSim(kube_api):
        op = ScopedOperator(kube_api, kubeconfig, tmp_path / "a.log", "team-a-1", "--namespace", "team-a")
        operators.append(op)
        op.wait_running()
        assert b"(namespace team-a, no instance id, lease team-a/rollouts-controller)" in op.log.read_bytes()
        wait_until(operators, "team-a's first revision", lambda: healthy_at(kube_api, "web", "web:v1", "team-a"))
        set_image(kube_api, "web", "web:v2", "team-a")
        wait_until(operators, "team-a's update", lambda: healthy_at(kube_api, "web", "web:v2", "team-a"))

    assert status(kube_api, "web", "team-b") == {}, "team-b's rollout was reconciled"
    assert kube_api.store.list("replicasets", "team-b") == []
    assert len(kube_api.store.list("replicasets", "team-a")) == 2
    lease = kube_api.store.read("leases", "team-a", "rollouts-controller")
    assert lease["spec"]["holderIdentity"] == "team-a-1"
    paths = [r.path for r in kube_api.requests]
    assert [p for p in paths if "/namespaces/team-b/" in p] == []
    # Cluster-wide requests: only ClusterAnalysisTemplates (cluster-scoped) and API discovery.
    cluster_wide = {p for p in paths if "/namespaces/" not in p and not re.fullmatch(r"/apis?(/[^/]+){0,2}", p)}
    assert cluster_wide == {"/apis/argoproj.io/v1alpha1/clusteranalysistemplates"}
    assert {p.split("/namespaces/")[1].split("/")[0] for p in paths if "/namespaces/" in p} == {"team-a"}


# --- --instance-id ----------------------------------------------------------------------------------


def test_controllers_with_and_without_an_instance_id_split_the_rollouts(
    kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path, operators: list[ScopedOperator], ok_url: str
) -> None:
    kube_api.store.create("analysistemplates", template(ok_url))
    kube_api.store.create("rollouts", rollout("blue-web", instance="blue"))
    kube_api.store.create("rollouts", rollout("web"))
    kube_api.clear_requests()
    with KubeletSim(kube_api):
        blue = ScopedOperator(kube_api, kubeconfig, tmp_path / "blue.log", "blue-1", "--instance-id", "blue")
        operators.append(blue)
        blue.wait_running()
        wait_until(operators, "blue-web's first revision", lambda: healthy_at(kube_api, "blue-web", "web:v1"))
        set_image(kube_api, "blue-web", "web:v2")
        wait_until(operators, "blue-web's analysed update", lambda: healthy_at(kube_api, "blue-web", "web:v2"))

        # Only the blue controller has run so far: it never touched the unlabelled rollout.
        assert status(kube_api, "web") == {}
        assert [
            w for w in writes(kube_api) if re.search(r"/(rollouts|analysisruns)/web(/|$)|/replicasets/web-", w[1])
        ] == []
        assert {r.query.get("labelSelector") for r in kube_api.requests if r.path.endswith("/rollouts")} == {
            f"{INSTANCE_ID_LABEL}=blue"
        }

        plain = ScopedOperator(kube_api, kubeconfig, tmp_path / "plain.log", "plain-1")
        operators.append(plain)
        plain.wait_running()  # its own Lease: it does not wait for the blue controller's
        wait_until(operators, "web's first revision", lambda: healthy_at(kube_api, "web", "web:v1"))
        set_image(kube_api, "web", "web:v2")
        wait_until(operators, "web's analysed update", lambda: healthy_at(kube_api, "web", "web:v2"))
        set_image(kube_api, "blue-web", "web:v3")  # both controllers at work: each still on its own
        wait_until(operators, "blue-web's second update", lambda: healthy_at(kube_api, "blue-web", "web:v3"))

    (blue_run_1, blue_run_2) = sorted(runs_of(kube_api, "blue-web"), key=lambda r: r["metadata"]["name"])
    (plain_run,) = runs_of(kube_api, "web")
    for run in (blue_run_1, blue_run_2):
        assert run["metadata"]["labels"][INSTANCE_ID_LABEL] == "blue"
        assert run["status"]["phase"] == "Successful"
    assert INSTANCE_ID_LABEL not in plain_run["metadata"]["labels"]
    assert plain_run["status"]["phase"] == "Successful"

    leases = {
        lease["metadata"]["name"]: lease["spec"]["holderIdentity"] for lease in kube_api.store.list("leases", "default")
    }
    assert leases == {"rollouts-controller-blue": "blue-1", "rollouts-controller": "plain-1"}

    # The runs' events, as Argo's analysis controller records them (core/v1 Events on the run).
    for run in (blue_run_1, plain_run):
        name = run["metadata"]["name"]
        reasons = {
            (e["reason"], e["message"], e["type"])
            for e in kube_api.store.list("events", "default")
            if e["involvedObject"]["kind"] == "AnalysisRun" and e["involvedObject"]["name"] == name
        }
        assert reasons == {
            ("MetricSuccessful", "Metric 'ok' Completed. Result: Successful", "Normal"),
            ("AnalysisRunSuccessful", "Analysis Completed. Result: Successful", "Normal"),
        }
    on_rollout = [
        e["message"]
        for e in kube_api.store.list("events", "default")
        if e["involvedObject"]["kind"] == "Rollout" and e["reason"] == "AnalysisRunSuccessful"
    ]
    name = plain_run["metadata"]["name"]
    assert f"Step Analysis Run '{name}' Status New: 'Successful' Previous: 'NoPreviousStatus'" in on_rollout


# --- flags --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(
            ("--platform", "kubernetes", "--instance-id", "blue green"),
            "error: --instance-id: 'blue green' is not a valid label value",
            id="instance-id-not-a-label-value",
        ),
        pytest.param(
            ("--platform", "kubernetes", "--instance-id", "x" * 64),
            "error: --instance-id: 'xxxxxxxxxxxxxxxxxxxx'… is 64 characters long",
            id="instance-id-too-long",
        ),
        pytest.param(
            ("--platform", "kubernetes", "--namespace", "Team_A"),
            "error: --namespace: 'Team_A' is not a namespace name",
            id="namespace-not-dns",
        ),
        pytest.param(
            ("--platform", "kubernetes", "--namespace", "a", "--watch-namespace", "b"),
            "error: --namespace a and --watch-namespace b disagree",
            id="namespace-and-old-flag-disagree",
        ),
        pytest.param(
            ("--instance-id", "blue"),
            "error: --instance-id applies to --platform kubernetes",
            id="instance-id-on-embedded",
        ),
    ],
)
def test_bad_scope_flags_are_one_line_errors(tmp_path: Path, flags: tuple[str, ...], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rollouts", "--state", str(tmp_path / "s.db"), "controller", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("global_ns", "namespace", "old", "expected"),
    [
        pytest.param(None, None, None, None, id="all-namespaces"),
        pytest.param(None, "team-a", None, "team-a", id="namespace"),
        pytest.param(None, None, "team-a", "team-a", id="deprecated-watch-namespace"),
        pytest.param(None, "team-a", "team-a", "team-a", id="both-agree"),
        pytest.param("team-g", None, None, "team-g", id="global-n-given"),
        pytest.param("team-g", "team-a", None, "team-a", id="own-flag-wins"),
    ],
)
def test_the_controllers_namespace(
    global_ns: str | None, namespace: str | None, old: str | None, expected: str | None
) -> None:
    parent = click.Context(cli, obj={"namespace": global_ns or "default"})
    source = click.core.ParameterSource.COMMANDLINE if global_ns else click.core.ParameterSource.DEFAULT
    parent.set_parameter_source("namespace", source)
    ctx = click.Context(controller, parent=parent, obj=parent.obj)
    assert _controller_scope(ctx, "kubernetes", namespace, old, "blue") == (expected, "blue")
    assert _controller_scope(ctx, "kubernetes", namespace, old, "") == (expected, None)
