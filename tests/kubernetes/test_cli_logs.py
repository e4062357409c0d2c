"""`rollouts --platform kubernetes logs POD [-c C] [-p] [-f] [--tail N]` against the API stand-in.

The stand-in serves pods/log from the logs the test writes (`store.append_log`) for Pods that
`KubeletSim` runs or that the test starts with the kubelet helpers. Reads run in-process
(CliRunner); `--follow` runs the CLI as its own process, as a person would, to see lines
arrive, the stream end when the pod is deleted, and Ctrl-C close the connection.
"""

# ruff: noqa: F811
from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from rollouts.cli.main import cli
from tests.support.kubeapi.fixtures import (  # noqa: F401
    NODE_NAME,
    KubeletSim,
    kube_api,
    kubeconfig,
    restart_container,
    start_containers,
)
from tests.support.kubeapi.server import KubeAPIServer

pytestmark = pytest.mark.integration

LOG_PATH = "/api/v1/namespaces/{}/pods/{}/log"


def run(kubeconfig: Path, *args: str) -> Result:
    result = CliRunner().invoke(cli, ["--platform", "kubernetes", "--kubeconfig", str(kubeconfig), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def failure(kubeconfig: Path, *args: str) -> str:
    """The one `error: …` line of a command that must fail with exit code 1."""
    result = run(kubeconfig, *args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def make_pod(
    api: KubeAPIServer,
    name: str,
    containers: tuple[str, ...] = ("app",),
    namespace: str = "default",
    annotations: dict[str, str] | None = None,
) -> None:
    spec = {"nodeName": NODE_NAME, "containers": [{"name": c, "image": f"{c}:1"} for c in containers]}
    meta: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    api.store.create("pods", body, namespace)
    start_containers(api.store, namespace, name)


def replica_set_pod(api: KubeAPIServer) -> str:
    """A ReplicaSet whose one Pod KubeletSim runs; the Pod's name."""
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web-6d4cf56db6"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:v1"}]},
            },
        },
    }
    with KubeletSim(api, create_pods=True):
        api.store.create("replicasets", rs, "default")
        deadline = time.monotonic() + 5
        while True:
            pods = api.store.list("pods", "default")
            if pods and pods[0]["status"].get("containerStatuses"):
                return str(pods[0]["metadata"]["name"])
            assert time.monotonic() < deadline, "KubeletSim started no pod"
            time.sleep(0.01)


def test_reads_the_log_of_a_pod_the_kubelet_runs(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    pod = replica_set_pod(kube_api)
    kube_api.store.append_log("default", pod, "web", "listening on :8080\nGET / 200\n")
    result = run(kubeconfig, "logs", pod)
    assert result.exit_code == 0, result.output
    assert result.stdout == "listening on :8080\nGET / 200\n"
    kube_api.clear_requests()
    assert run(kubeconfig, "logs", pod, "--tail", "1").stdout == "GET / 200\n"
    (request,) = [r for r in kube_api.requests if r.path.endswith("/log")]
    assert request.path == LOG_PATH.format("default", pod)
    assert request.query == {"container": "web", "tailLines": "1"}


def test_namespace_and_context_select_the_pod(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    make_pod(kube_api, "api-1", namespace="kube-system")
    kube_api.store.append_log("kube-system", "api-1", "app", "in kube-system\n")
    context = kube_api.kubeconfig()["current-context"]
    result = run(kubeconfig, "--context", context, "-n", "kube-system", "logs", "api-1")
    assert (result.exit_code, result.stdout) == (0, "in kube-system\n"), result.output
    line = failure(kubeconfig, "logs", "api-1")
    assert 'pod "api-1" not found in namespace "default"' in line
    line = failure(kubeconfig, "--context", "nope", "logs", "api-1")
    assert "cannot load the Kubernetes configuration" in line and "nope" in line


def test_previous_is_the_log_before_the_last_restart(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    make_pod(kube_api, "web-1")
    kube_api.store.append_log("default", "web-1", "app", "panic: out of memory\n")
    line = failure(kubeconfig, "logs", "web-1", "--previous")
    assert 'cannot read the log of pod "web-1" in namespace "default"' in line
    assert 'previous terminated container "app" in pod "web-1" not found' in line
    restart_container(kube_api.store, "default", "web-1", "app", exit_code=137, reason="OOMKilled")
    kube_api.store.append_log("default", "web-1", "app", "started again\n")
    assert run(kubeconfig, "logs", "web-1", "-p").stdout == "panic: out of memory\n"
    assert run(kubeconfig, "logs", "web-1").stdout == "started again\n"


def test_container_choice(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    make_pod(kube_api, "web-1", ("app", "proxy"))
    kube_api.store.append_log("default", "web-1", "app", "app line\n")
    kube_api.store.append_log("default", "web-1", "proxy", "proxy line\n")
    result = run(kubeconfig, "logs", "web-1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "app line\n"
    assert 'Defaulted container "app" out of: app, proxy' in result.stderr
    assert run(kubeconfig, "logs", "web-1", "-c", "proxy").stdout == "proxy line\n"
    line = failure(kubeconfig, "logs", "web-1", "-c", "nope")
    assert 'pod "web-1" in namespace "default"' in line and "container nope is not valid for pod web-1" in line
    make_pod(kube_api, "web-2", ("app", "proxy"), annotations={"kubectl.kubernetes.io/default-container": "proxy"})
    kube_api.store.append_log("default", "web-2", "proxy", "the annotated one\n")
    assert run(kubeconfig, "logs", "web-2").stdout == "the annotated one\n"


def test_server_errors_are_one_line(kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path) -> None:
    make_pod(kube_api, "web-1")
    kube_api.fail_next("GET", r"/pods/web-1/log$", 500, message="kubelet is on fire")
    line = failure(kubeconfig, "logs", "web-1")
    assert 'pod "web-1" in namespace "default"' in line and "kubelet is on fire" in line
    config = kube_api.write_kubeconfig(tmp_path / "unreachable")
    config.write_text(config.read_text().replace(kube_api.url, "http://127.0.0.1:1"))
    assert "cannot reach the Kubernetes API" in failure(config, "logs", "web-1")


# -- --follow, as a process ----------------------------------------------------------------------------


class FollowingCli:
    """`rollouts logs -f` as its own process; its stdout lines are read on a thread into a queue."""

    def __init__(self, kubeconfig: Path, *args: str) -> None:
        command = [sys.executable, "-m", "rollouts", "--platform", "kubernetes", "--kubeconfig", str(kubeconfig)]
        self.proc = subprocess.Popen(
            [*command, "logs", "-f", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode())

    def line(self, timeout: float = 10.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s; stderr: {self.stderr()}") from None

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "<still running>"
        return self.proc.stderr.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def follow() -> Iterator[list[FollowingCli]]:
    started: list[FollowingCli] = []
    try:
        yield started
    finally:
        for cli_process in started:
            cli_process.stop()


def test_follow_prints_new_lines_until_the_pod_is_deleted(
    kube_api: KubeAPIServer, kubeconfig: Path, follow: list[FollowingCli]
) -> None:
    make_pod(kube_api, "web-1")
    kube_api.store.append_log("default", "web-1", "app", "booted\n")
    proc = FollowingCli(kubeconfig, "web-1")
    follow.append(proc)
    assert proc.line() == "booted\n"
    kube_api.wait_for_log_streams(1, timeout=10)
    for n in range(3):
        kube_api.store.append_log("default", "web-1", "app", f"request {n}\n")
        assert proc.line() == f"request {n}\n"
    kube_api.store.delete("pods", "default", "web-1")
    assert proc.wait() == 0, proc.stderr()
    assert kube_api.open_log_streams() == 0


def test_ctrl_c_ends_the_follow_and_the_stream(
    kube_api: KubeAPIServer, kubeconfig: Path, follow: list[FollowingCli]
) -> None:
    make_pod(kube_api, "web-1")
    proc = FollowingCli(kubeconfig, "web-1", "--tail", "0")
    follow.append(proc)
    kube_api.wait_for_log_streams(1, timeout=10)
    kube_api.store.append_log("default", "web-1", "app", "only this\n")
    assert proc.line() == "only this\n"
    proc.proc.send_signal(signal.SIGINT)
    assert proc.wait() == 130
    assert proc.stderr() == "", "Ctrl-C is not an error"
    kube_api.wait_for_log_streams(0)
    assert kube_api.store.log_follower_count == 0
