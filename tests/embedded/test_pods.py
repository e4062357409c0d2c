"""The embedded pod supervisor, with real local processes (loopback only)."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from rollouts.platform.embedded.pods import PodFailedError, PodPhase, PodStatus, PodSupervisor
from rollouts.platform.embedded.podspec import ContainerSpec, PodSpec
from rollouts.platform.embedded.ports import free_port, handed_out, release_port

DEMO = (sys.executable, "-m", "rollouts.demo.app")
PY = shlex.quote(sys.executable)


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (zombies waiting for their reaper count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll `predicate` until it is true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def pod(
    name: str,
    tmp_path: Path,
    *containers: ContainerSpec,
    grace: float = 5.0,
) -> PodSpec:
    return PodSpec(
        name=name,
        labels={"app": "demo"},
        containers=containers,
        log_dir=tmp_path / "logs",
        termination_grace_seconds=grace,
    )


def demo_container(image: str = "rollouts-demo:v1", **kwargs: object) -> ContainerSpec:
    return ContainerSpec(
        name="demo",
        image=image,
        command=DEMO,
        readiness_path="/healthz",
        readiness_period_seconds=0.1,
        **kwargs,  # type: ignore[arg-type]
    )


def sh(name: str, script: str, **kwargs: object) -> ContainerSpec:
    return ContainerSpec(name=name, image=f"{name}:v1", command=("sh", "-c", script), **kwargs)  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.events: list[PodStatus] = []

    def __call__(self, status: PodStatus) -> None:
        self.events.append(status)

    def phases(self, name: str) -> list[PodPhase]:
        return [e.phase for e in self.events if e.name == name]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def supervisor(recorder: Recorder) -> AsyncIterator[PodSupervisor]:
    sup = PodSupervisor(on_change=recorder, probe_timeout=0.5, backoff_base=0.05, backoff_cap=0.2)
    try:
        yield sup
    finally:
        async with asyncio.timeout(15):
            await sup.close()


async def test_demo_pod_becomes_ready_and_serves(supervisor: PodSupervisor, recorder: Recorder, tmp_path: Path) -> None:
    async with asyncio.timeout(15):
        started = await supervisor.start_pod(pod("demo-abc12", tmp_path, demo_container("rollouts-demo:v2")))
        assert started.phase is PodPhase.RUNNING
        assert not started.ready
        assert started.host == "127.0.0.1"
        assert len(started.pids) == 1
        assert started.log_paths == {"demo": str(tmp_path / "logs" / "demo-abc12" / "demo.log")}

        status = await supervisor.wait_ready("demo-abc12", timeout=10)
        assert status.ready
        assert status.port == started.port
        assert status.ready_since is not None and status.ready_since >= status.started_at
        assert status.restarts == 0
        assert status.message == ""
        assert supervisor.pods() == [status]

        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://{status.host}:{status.port}/")
        assert response.status_code == 200
        assert response.json() == {"version": "v2", "pod": "demo-abc12"}

        assert recorder.events[0].phase is PodPhase.RUNNING and not recorder.events[0].ready
        assert recorder.events[-1].ready

        await supervisor.stop_pod("demo-abc12")
        assert supervisor.status("demo-abc12") is None
        assert recorder.phases("demo-abc12")[-2:] == [PodPhase.TERMINATING, PodPhase.STOPPED]
        assert recorder.events[-1].exit_code == 0  # the demo app exits cleanly on SIGTERM
        assert not pid_alive(status.pids[0])
        assert status.port not in handed_out()


async def test_environment_and_logs(supervisor: PodSupervisor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUTS_TEST_NOT_PASSED", "secret")
    script = (
        'echo "PORT=$PORT IMAGE=$ROLLOUTS_IMAGE POD=$POD_NAME FOO=$FOO X=${ROLLOUTS_TEST_NOT_PASSED:-unset}"; '
        "exec sleep 100"
    )
    spec = pod(
        "env-1",
        tmp_path,
        sh("main", script, env={"FOO": "bar"}, readiness_path=None),
        sh("side", "echo side; exec sleep 100"),
    )
    async with asyncio.timeout(10):
        status = await supervisor.start_pod(spec)
        log = Path(status.log_paths["main"])
        await eventually(lambda: log.exists() and "PORT=" in log.read_text(), "main log")
        assert log.read_text().strip() == f"PORT={status.port} IMAGE=main:v1 POD=env-1 FOO=bar X=unset"
        side_log = Path(status.log_paths["side"])
        await eventually(lambda: side_log.exists() and side_log.read_text() == "side\n", "side log")
        # The first container does not listen on PORT: never ready. The sidecar does not need to.
        expected = f"Readiness probe failed: TCP connect 127.0.0.1:{status.port} -> connection refused"

        def refused() -> bool:
            current = supervisor.status("env-1")
            return current is not None and current.message == expected

        await eventually(refused, "the TCP check to be refused")
        current = supervisor.status("env-1")
        assert current is not None and not current.ready and len(current.pids) == 2


async def test_readiness_fails_then_succeeds(supervisor: PodSupervisor, tmp_path: Path) -> None:
    flag = tmp_path / "ready.flag"
    server = tmp_path / "server.py"
    server.write_text(
        "import os, pathlib\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
        f"FLAG = pathlib.Path({str(flag)!r})\n"
        "class H(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200 if FLAG.exists() else 500)\n"
        "        self.send_header('Content-Length', '0')\n"
        "        self.end_headers()\n"
        "    def log_message(self, *args):\n"
        "        pass\n"
        "HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n"
    )
    container = ContainerSpec(
        name="web",
        image="web:v1",
        command=(sys.executable, str(server)),
        readiness_path="/ready",
        readiness_period_seconds=0.05,
    )
    async with asyncio.timeout(15):
        status = await supervisor.start_pod(pod("probe-1", tmp_path, container))
        expected = f"Readiness probe failed: GET http://127.0.0.1:{status.port}/ready -> 500"

        def failing() -> bool:
            current = supervisor.status("probe-1")
            return current is not None and current.message == expected

        await eventually(failing, "the probe to fail with 500")
        with pytest.raises(TimeoutError, match="-> 500"):
            await supervisor.wait_ready("probe-1", timeout=0.2)

        flag.touch()
        ready = await supervisor.wait_ready("probe-1", timeout=5)
        assert ready.message == ""
        assert ready.restarts == 0

        flag.unlink()  # readiness is probed continuously
        await eventually(failing, "the pod to become unready again")
        current = supervisor.status("probe-1")
        assert current is not None and not current.ready and current.ready_since is None
        assert current.phase is PodPhase.RUNNING


async def test_crash_is_restarted_with_backoff_and_previous_log(supervisor: PodSupervisor, tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    script = (
        f"if [ -e {shlex.quote(str(marker))} ]; then echo second run; exec {PY} -m rollouts.demo.app; fi; "
        f"echo first run; touch {shlex.quote(str(marker))}; exit 3"
    )
    async with asyncio.timeout(15):
        status = await supervisor.start_pod(pod("flaky-1", tmp_path, sh("flaky", script)))
        ready = await supervisor.wait_ready("flaky-1", timeout=10)
        assert ready.restarts == 1
        assert ready.exit_code == 3
        assert ready.message == ""
        log_dir = tmp_path / "logs" / "flaky-1"
        assert (log_dir / "flaky.previous.log").read_text() == "first run\n"
        current_log = (log_dir / "flaky.log").read_text()
        assert current_log.startswith("second run\n")
        assert ready.pids != status.pids
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{ready.port}/")
        assert response.json()["version"] == "v1"


async def test_crash_loop(supervisor: PodSupervisor, recorder: Recorder, tmp_path: Path) -> None:
    async with asyncio.timeout(15):
        await supervisor.start_pod(pod("crash-1", tmp_path, sh("crasher", "echo boom; exit 7")))

        def looping() -> bool:
            current = supervisor.status("crash-1")
            return current is not None and current.restarts >= 3

        await eventually(looping, "three restarts")
        status = supervisor.status("crash-1")
        assert status is not None
        assert status.phase is PodPhase.RUNNING
        assert not status.ready
        assert status.exit_code == 7
        assert status.message == "CrashLoopBackOff: container crasher exited with code 7"
        assert (tmp_path / "logs" / "crash-1" / "crasher.previous.log").read_text() == "boom\n"
        restarts = [e.restarts for e in recorder.events if e.name == "crash-1"]
        assert restarts == sorted(restarts)
        assert not any(e.ready for e in recorder.events)


async def test_bad_start_image_crash_loops(supervisor: PodSupervisor, tmp_path: Path) -> None:
    async with asyncio.timeout(15):
        await supervisor.start_pod(pod("bad-1", tmp_path, demo_container("rollouts-demo:bad-start")))

        def crashed() -> bool:
            current = supervisor.status("bad-1")
            return current is not None and current.restarts >= 1 and current.exit_code == 1

        await eventually(crashed, "the bad-start container to crash")
        status = supervisor.status("bad-1")
        assert status is not None
        assert status.message.startswith("CrashLoopBackOff: container demo exited with code 1")


async def test_stop_kills_the_whole_process_group(
    supervisor: PodSupervisor, recorder: Recorder, tmp_path: Path
) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = f"sleep 100 & echo $! > {shlex.quote(str(child_pid_file))}; exec {PY} -m rollouts.demo.app"
    async with asyncio.timeout(15):
        await supervisor.start_pod(pod("group-1", tmp_path, sh("web", script)))
        status = await supervisor.wait_ready("group-1", timeout=10)
        await eventually(lambda: child_pid_file.exists() and child_pid_file.read_text().strip(), "child pid")
        child = int(child_pid_file.read_text())
        (leader,) = status.pids
        assert pid_alive(child) and pid_alive(leader)
        assert os.getpgid(child) == leader

        await supervisor.stop_pod("group-1")
        assert not pid_alive(leader)
        assert not pid_alive(child)
        assert supervisor.status("group-1") is None
        assert recorder.events[-1].phase is PodPhase.STOPPED
        assert recorder.events[-1].message == "Stopped"


async def test_sigterm_ignored_then_sigkill_after_grace(
    supervisor: PodSupervisor, recorder: Recorder, tmp_path: Path
) -> None:
    container = ContainerSpec(
        name="stubborn",
        image="stubborn:v1",
        command=(
            sys.executable,
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ignoring SIGTERM', flush=True)\n"
            "time.sleep(100)\n",
        ),
    )
    async with asyncio.timeout(15):
        status = await supervisor.start_pod(pod("stubborn-1", tmp_path, container, grace=0.5))
        log = Path(status.log_paths["stubborn"])
        await eventually(lambda: log.exists() and "ignoring SIGTERM" in log.read_text(), "the handler")

        started = time.monotonic()
        await supervisor.stop_pod("stubborn-1")
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 5
        assert not pid_alive(status.pids[0])
        stopped = recorder.events[-1]
        assert stopped.phase is PodPhase.STOPPED
        assert stopped.exit_code == 137
        assert stopped.message == "Stopped: killed after grace period"


async def test_close_leaves_no_processes(tmp_path: Path) -> None:
    supervisor = PodSupervisor(backoff_base=0.05)
    child_pid_file = tmp_path / "child.pid"
    pids: list[int] = []
    try:
        async with asyncio.timeout(15):
            a = await supervisor.start_pod(pod("close-a", tmp_path, demo_container()))
            b = await supervisor.start_pod(
                pod(
                    "close-b",
                    tmp_path,
                    sh("main", f"sleep 100 & echo $! > {shlex.quote(str(child_pid_file))}; exec sleep 100"),
                    sh("side", "exec sleep 100"),
                    grace=1,
                )
            )
            c = await supervisor.start_pod(pod("close-c", tmp_path, sh("crasher", "exit 1")))
            await eventually(lambda: child_pid_file.exists() and child_pid_file.read_text().strip(), "child")
            pids = [*a.pids, *b.pids, *c.pids, int(child_pid_file.read_text())]
            assert len(pids) >= 4
            await supervisor.wait_ready("close-a", timeout=10)
    finally:
        async with asyncio.timeout(15):
            await supervisor.close()
    assert supervisor.pods() == []
    assert [pid for pid in pids if pid_alive(pid)] == []
    with pytest.raises(RuntimeError, match="closed"):
        await supervisor.start_pod(pod("late", tmp_path, demo_container()))


async def test_missing_command_fails_the_pod(supervisor: PodSupervisor, tmp_path: Path) -> None:
    no_command = ContainerSpec(name="app", image="nginx:1.25", command=())
    status = await supervisor.start_pod(pod("nocmd-1", tmp_path, no_command))
    assert status.phase is PodPhase.FAILED
    assert not status.ready
    assert status.pids == ()
    assert "container app" in status.message and "needs `command`" in status.message
    with pytest.raises(PodFailedError, match="needs `command`"):
        await supervisor.wait_ready("nocmd-1", timeout=1)

    unknown = ContainerSpec(name="app", image="x:1", command=("no-such-executable-rollouts-test",))
    status = await supervisor.start_pod(pod("nocmd-2", tmp_path, unknown))
    assert status.phase is PodPhase.FAILED
    assert "no-such-executable-rollouts-test" in status.message and "not found" in status.message

    await supervisor.stop_pod("nocmd-1")
    assert supervisor.status("nocmd-1") is None


async def test_duplicate_and_unknown_pods(supervisor: PodSupervisor, tmp_path: Path) -> None:
    async with asyncio.timeout(10):
        await supervisor.start_pod(pod("dup-1", tmp_path, sh("main", "exec sleep 100")))
        with pytest.raises(ValueError, match="already exists"):
            await supervisor.start_pod(pod("dup-1", tmp_path, sh("main", "exec sleep 100")))
        await supervisor.stop_pod("no-such-pod")
        with pytest.raises(LookupError):
            await supervisor.wait_ready("no-such-pod", timeout=0.1)
        # Concurrent stops both wait for the pod to be gone.
        await asyncio.gather(supervisor.stop_pod("dup-1"), supervisor.stop_pod("dup-1"))
        assert supervisor.status("dup-1") is None


def test_free_port_never_repeats_until_released() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(1024 <= p <= 65535 for p in ports)
    assert set(ports) <= handed_out()
    for port in ports:
        release_port(port)
    assert not set(ports) & handed_out()
