"""Probes on real local processes (loopback only): readiness, liveness and startup probes.

Covers exec readiness following a file (with the pod's environment), tcpSocket readiness,
an exec probe killed at its timeout, httpGet liveness failure restarting the container (restart
count, reason, events, last termination), SIGKILL after the grace period for a container that
ignores SIGTERM, startup gating and startup failure, a probe spec that cannot run failing the
pod, and the embedded runtime carrying a manifest's liveness probe through to the Pod object
and its events.

Probe periods are 0.1 s here (the supervisor's model is fractional); only the runtime test
goes through the manifest, whose fields are whole seconds.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from rollouts.model.pod import Container
from rollouts.platform.embedded import probespec
from rollouts.platform.embedded.pods import PodEvent, PodPhase, PodStatus, PodSupervisor, Termination
from rollouts.platform.embedded.podspec import ContainerSpec, PodSpec
from rollouts.platform.embedded.probespec import ContainerProbes, Exec, HTTPGet, Probe, TCPSocket
from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.proxy_metrics import ProxyMetrics
from rollouts.platform.embedded.runtime import EmbeddedRuntime
from rollouts.store.sqlite import SqliteStore

PERIOD = 0.1


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll `predicate` until it is true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    """Every status and event the supervisor reports."""

    def __init__(self) -> None:
        self.statuses: list[PodStatus] = []
        self.events: list[PodEvent] = []

    def status(self, status: PodStatus) -> None:
        self.statuses.append(status)

    def event(self, event: PodEvent) -> None:
        self.events.append(event)

    def messages(self) -> list[str]:
        return [s.message for s in self.statuses]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def supervisor(recorder: Recorder) -> AsyncIterator[PodSupervisor]:
    sup = PodSupervisor(
        on_change=recorder.status, on_event=recorder.event, probe_timeout=0.5, backoff_base=0.05, backoff_cap=0.2
    )
    try:
        yield sup
    finally:
        async with asyncio.timeout(15):
            await sup.close()


def pod(name: str, tmp_path: Path, container: ContainerSpec, *, grace: float = 2.0) -> PodSpec:
    return PodSpec(
        name=name, labels={}, containers=(container,), log_dir=tmp_path / "logs", termination_grace_seconds=grace
    )


def sh(script: str, probes: ContainerProbes, env: dict[str, str] | None = None) -> ContainerSpec:
    return ContainerSpec(name="app", image="app:v1", command=("sh", "-c", script), env=env or {}, probes=probes)


def fast(handler: Exec | HTTPGet | TCPSocket, **kwargs: Any) -> Probe:
    kwargs.setdefault("period", PERIOD)
    kwargs.setdefault("timeout", 0.5)
    return Probe(handler, **kwargs)


def current(supervisor: PodSupervisor, name: str) -> PodStatus:
    status = supervisor.status(name)
    assert status is not None
    return status


async def test_exec_readiness_follows_a_file_with_the_pods_environment(
    supervisor: PodSupervisor, recorder: Recorder, tmp_path: Path
) -> None:
    flag = tmp_path / "ready.flag"
    check = Exec(("sh", "-c", 'test "$POD_NAME" = exec-1 && test -e "$FLAG"'))
    container = sh("exec sleep 30", ContainerProbes(readiness=fast(check, failure_threshold=1)), {"FLAG": str(flag)})
    async with asyncio.timeout(15):
        await supervisor.start_pod(pod("exec-1", tmp_path, container))
        failed = 'Readiness probe failed: exec sh -c \'test "$POD_NAME" = exec-1 && test -e "$FLAG"\' -> exit code 1'
        await eventually(lambda: current(supervisor, "exec-1").message == failed, "the exec probe to fail")
        assert not current(supervisor, "exec-1").ready

        flag.touch()
        ready = await supervisor.wait_ready("exec-1", timeout=5)
        assert ready.message == ""
        assert recorder.events == [], "never ready before: no Unhealthy event"

        flag.unlink()
        await eventually(lambda: not current(supervisor, "exec-1").ready, "the pod to become unready")
        status = current(supervisor, "exec-1")
        assert status.message == failed
        assert status.phase is PodPhase.RUNNING and status.restarts == 0
        assert recorder.events == [PodEvent("exec-1", "Warning", "Unhealthy", failed)]


async def test_tcp_readiness(supervisor: PodSupervisor, tmp_path: Path) -> None:
    flag = tmp_path / "listen.flag"
    server = (
        "import os, pathlib, socket, time\n"
        f"while not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.02)\n"
        "s = socket.create_server(('127.0.0.1', int(os.environ['PORT'])))\n"
        "while True: s.accept()[0].close()\n"
    )
    container = ContainerSpec(
        name="app",
        image="app:v1",
        command=(sys.executable, "-c", server),
        probes=ContainerProbes(readiness=fast(TCPSocket(), failure_threshold=1)),
    )
    async with asyncio.timeout(15):
        started = await supervisor.start_pod(pod("tcp-1", tmp_path, container))
        refused = f"Readiness probe failed: TCP connect 127.0.0.1:{started.port} -> connection refused"
        await eventually(lambda: current(supervisor, "tcp-1").message == refused, "the TCP probe to be refused")
        await asyncio.sleep(3 * PERIOD)
        assert not current(supervisor, "tcp-1").ready, "still not listening"

        flag.touch()
        ready = await supervisor.wait_ready("tcp-1", timeout=5)
        assert ready.message == "" and ready.restarts == 0


async def test_exec_probe_is_killed_at_its_timeout(supervisor: PodSupervisor, tmp_path: Path) -> None:
    marker = f"probe-{time.monotonic_ns()}"  # names the probe's processes: none may be left behind
    check = Exec(("sh", "-c", f"sh -c 'sleep 31; : {marker}' & sleep 32; : {marker}"))
    container = sh("exec sleep 30", ContainerProbes(readiness=fast(check, timeout=0.2, failure_threshold=1)))
    async with asyncio.timeout(15):
        await supervisor.start_pod(pod("slow-1", tmp_path, container))
        await eventually(lambda: "timed out after 0.2s" in current(supervisor, "slow-1").message, "a timeout")
        status = current(supervisor, "slow-1")
        assert status.message.startswith("Readiness probe failed: exec sh -c ")
        assert not status.ready and status.restarts == 0
        await supervisor.stop_pod("slow-1")
    # Killed processes may take a moment to die on a busy machine; a leaked one lives 30 s.
    await eventually(lambda: not _processes_mentioning(marker), "no process of the probe left", timeout=3)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry))
    return found


# A web server on PORT: /healthz answers 200 only to a request carrying `X-Probe: yes`, and 500
# while the file named by $SICK exists. A restarted process starts healthy (it removes the file).
SERVER = """
import os, pathlib
from http.server import BaseHTTPRequestHandler, HTTPServer
SICK = pathlib.Path(os.environ["SICK"])
SICK.unlink(missing_ok=True)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("X-Probe") == "yes" and not SICK.exists()
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


async def test_liveness_failure_restarts_the_container(
    supervisor: PodSupervisor, recorder: Recorder, tmp_path: Path
) -> None:
    sick = tmp_path / "sick"
    liveness = fast(HTTPGet(path="/healthz", headers=(("X-Probe", "yes"),)), timeout=1.0, failure_threshold=2)
    # Liveness waits until the server listens, however slowly Python starts on a busy machine.
    startup = fast(TCPSocket(), failure_threshold=100)
    container = ContainerSpec(
        name="web",
        image="web:v1",
        command=(sys.executable, "-c", SERVER),
        env={"SICK": str(sick)},
        probes=ContainerProbes(liveness=liveness, startup=startup),
    )
    async with asyncio.timeout(15):
        await supervisor.start_pod(pod("live-1", tmp_path, container))
        first = await supervisor.wait_ready("live-1", timeout=5)
        await asyncio.sleep(5 * PERIOD)
        assert current(supervisor, "live-1").restarts == 0, "a healthy container is left alone"

        sick.touch()
        await eventually(lambda: current(supervisor, "live-1").restarts == 1, "a restart")
        again = await supervisor.wait_ready("live-1", timeout=5)
        assert again.pids != first.pids and again.port == first.port
        assert again.restarts == 1 and again.containers[0].restarts == 1

        reason = f"Liveness probe failed: GET http://127.0.0.1:{first.port}/healthz -> 500"
        assert f"CrashLoopBackOff: container web was killed: {reason}" in recorder.messages()
        # Python's default SIGTERM handling: killed by signal 15.
        assert again.containers[0].last_termination == Termination(143, "Error", reason)
        assert again.containers[0].last_state() == {
            "terminated": {"reason": "Error", "exitCode": 143, "message": reason}
        }
        assert recorder.events == [
            PodEvent("live-1", "Warning", "Unhealthy", reason),
            PodEvent("live-1", "Normal", "Killing", "Container web failed liveness probe, will be restarted"),
        ]


async def test_liveness_kill_escalates_to_sigkill_after_the_grace_period(
    supervisor: PodSupervisor, recorder: Recorder, tmp_path: Path
) -> None:
    stubborn = sh(
        "trap '' TERM; while :; do sleep 0.05; done",
        ContainerProbes(liveness=fast(Exec(("false",)), failure_threshold=1)),
    )
    async with asyncio.timeout(15):
        await supervisor.start_pod(pod("stubborn-1", tmp_path, stubborn, grace=0.3))
        began = time.monotonic()
        await eventually(lambda: current(supervisor, "stubborn-1").restarts >= 1, "a restart")
        assert time.monotonic() - began >= 0.3, "SIGKILL waited for the grace period"
        reason = "Liveness probe failed: exec false -> exit code 1"
        ends = [s.containers[0].last_termination for s in recorder.statuses if s.containers]
        assert Termination(137, "Error", reason) in ends


async def test_startup_probe_gates_liveness_and_readiness(
    supervisor: PodSupervisor, recorder: Recorder, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    is_started = Exec(("test", "-e", str(started)))
    probes = ContainerProbes(
        startup=fast(is_started, failure_threshold=100),
        # Both fail until the startup file exists: run early, liveness would kill at once.
        liveness=fast(is_started, failure_threshold=1),
        readiness=fast(is_started, failure_threshold=1),
    )
    async with asyncio.timeout(15):
        await supervisor.start_pod(pod("startup-1", tmp_path, sh("exec sleep 30", probes)))
        failing = f"Startup probe failed: exec test -e {started} -> exit code 1"
        await eventually(lambda: current(supervisor, "startup-1").message == failing, "the startup probe to fail")
        await asyncio.sleep(5 * PERIOD)
        status = current(supervisor, "startup-1")
        assert not status.ready and status.restarts == 0 and status.message == failing

        started.touch()
        ready = await supervisor.wait_ready("startup-1", timeout=5)
        assert ready.restarts == 0
        await asyncio.sleep(3 * PERIOD)
        assert current(supervisor, "startup-1").ready
        assert recorder.events == []


async def test_startup_probe_failure_kills_the_container(
    supervisor: PodSupervisor, recorder: Recorder, tmp_path: Path
) -> None:
    probes = ContainerProbes(startup=fast(Exec(("false",)), failure_threshold=3))
    async with asyncio.timeout(15):
        began = time.monotonic()
        await supervisor.start_pod(pod("nostart-1", tmp_path, sh("exec sleep 30", probes)))
        await eventually(lambda: current(supervisor, "nostart-1").restarts >= 1, "a restart")
        assert time.monotonic() - began >= 2 * PERIOD, "three failures, a period apart"
        reason = "Startup probe failed: exec false -> exit code 1"
        assert f"CrashLoopBackOff: container app was killed: {reason}" in recorder.messages()
        assert recorder.events[:2] == [
            PodEvent("nostart-1", "Warning", "Unhealthy", reason),
            PodEvent("nostart-1", "Normal", "Killing", "Container app failed startup probe, will be restarted"),
        ]
        assert not any(s.ready for s in recorder.statuses)


async def test_a_probe_that_cannot_run_fails_the_pod(supervisor: PodSupervisor, tmp_path: Path) -> None:
    manifest = Container.model_validate(
        {
            "name": "app",
            "image": "app:v1",
            "livenessProbe": {"tcpSocket": {"port": 8080}, "exec": {"command": ["true"]}},
        }
    )
    container = sh("exec sleep 30", probespec.from_container(manifest))
    async with asyncio.timeout(15):
        status = await supervisor.start_pod(pod("bad-probe-1", tmp_path, container))
    assert status.phase is PodPhase.FAILED and status.pids == ()
    assert status.message == (
        "CreateContainerError: container app: livenessProbe: sets 2 handlers (tcpSocket, exec); set exactly one"
    )


SICK_ONCE = 'if test -e "$SICK"; then rm "$SICK"; exit 1; fi'


async def test_runtime_runs_a_manifests_liveness_probe(tmp_path: Path) -> None:
    """The runtime builds the probes from the pod template, and a liveness kill shows in the Pod
    object (restartCount, lastState) and its events. Whole-second periods: about 3 s."""
    sick = tmp_path / "sick"
    container = {
        "name": "app",
        "image": "demo:v1",
        "command": [sys.executable, "-m", "rollouts.demo.app"],
        "env": [{"name": "SICK", "value": str(sick)}],
        "livenessProbe": {
            # Fails once per touch of $SICK (it removes the file), so exactly one restart.
            "exec": {"command": ["sh", "-c", SICK_ONCE]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    }
    store = SqliteStore(tmp_path / "state.db")
    store.create(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
            },
        }
    )
    runtime = EmbeddedRuntime(store, tmp_path / "state.d", ProxyServer(ProxyMetrics()))

    def pod_status() -> dict[str, Any]:
        pods = store.list("Pod")
        return dict(pods[0].get("status") or {}) if pods else {}

    try:
        async with asyncio.timeout(20):
            await runtime.start()
            await eventually(lambda: pod_status().get("ready") is True, "the pod to be ready", timeout=10)
            sick.touch()
            await eventually(lambda: pod_status().get("restartCount") == 1, "a restart", timeout=10)
            await eventually(lambda: pod_status().get("ready") is True, "the pod to be ready again", timeout=10)
            reason = f"Liveness probe failed: exec sh -c {shlex.quote(SICK_ONCE)} -> exit code 1"
            status = pod_status()
            # The demo app exits cleanly on SIGTERM.
            assert status["containerStatuses"][0]["lastState"] == {
                "terminated": {"reason": "Completed", "exitCode": 0, "message": reason}
            }
            name = store.list("Pod")[0]["metadata"]["name"]
            events = [(e.type, e.reason, e.message) for e in store.events("Pod", name, "default")]
            assert events == [
                ("Warning", "Unhealthy", reason),
                ("Normal", "Killing", "Container app failed liveness probe, will be restarted"),
            ]
    finally:
        await runtime.close()
        store.close()
