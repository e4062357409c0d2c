"""Adopting pods across a supervisor's death, with real processes (loopback only).

A first supervisor runs in its own Python process and is killed with SIGKILL, as a crashed
controller would be; its pods (process groups in their own sessions) keep running, and a
second supervisor in the test process takes them over with `PodSupervisor.adopt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollouts.platform.embedded.pods import (
    ContainerProcess,
    PodPhase,
    PodStatus,
    PodSupervisor,
    find_session_leaders,
    process_is,
    process_start_time,
)
from rollouts.platform.embedded.podspec import ContainerSpec, PodSpec
from rollouts.platform.embedded.ports import free_port
from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.proxy_metrics import ProxyMetrics
from rollouts.platform.embedded.runtime import POD_UID_ENV, EmbeddedRuntime
from rollouts.store.sqlite import SqliteStore

DEMO = (sys.executable, "-m", "rollouts.demo.app")

# The first supervisor: start the pod, report its status once ready, then wait to be killed.
FIRST_SUPERVISOR = r"""
import asyncio, dataclasses, json, sys
from pathlib import Path
from rollouts.platform.embedded.pods import PodSupervisor
from rollouts.platform.embedded.podspec import ContainerSpec, PodSpec

async def main() -> None:
    raw = json.loads(sys.argv[1])
    containers = tuple(
        ContainerSpec(**{**c, "command": tuple(c["command"]), "args": tuple(c["args"])}) for c in raw["containers"]
    )
    spec = PodSpec(name=raw["name"], labels={}, containers=containers, log_dir=Path(raw["log_dir"]))
    supervisor = PodSupervisor(probe_timeout=0.5)
    await supervisor.start_pod(spec)
    status = await supervisor.wait_ready(spec.name, 20)
    report = {"started_at": status.started_at, "containers": [dataclasses.asdict(c) for c in status.containers]}
    print(json.dumps(report), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def alive(pid: int) -> bool:
    """A live, non-zombie process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


async def eventually(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def demo(name: str = "demo", image: str = "rollouts-demo:v1") -> ContainerSpec:
    return ContainerSpec(name=name, image=image, command=DEMO, readiness_path="/healthz", readiness_period_seconds=0.1)


def sidecar() -> ContainerSpec:
    return ContainerSpec(name="sidecar", image="sidecar:v1", command=("sleep", "60"))


def pod_spec(name: str, tmp_path: Path, *containers: ContainerSpec) -> PodSpec:
    return PodSpec(name=name, labels={}, containers=containers, log_dir=tmp_path / "logs", termination_grace_seconds=3)


class Processes:
    """Every process a test saw (pid and start time); any still alive at the end is killed and
    fails the test."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def saw(self, *pids: int | None) -> None:
        for pid in pids:
            start = process_start_time(pid) if pid is not None else None
            if pid is not None and start is not None:
                self.seen[pid] = start

    def alive(self) -> list[int]:
        return [pid for pid, start in self.seen.items() if alive(pid) and process_start_time(pid) == start]


@pytest.fixture
def processes() -> Iterator[Processes]:
    seen = Processes()
    yield seen
    leaked = seen.alive()
    for pid in leaked:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    assert leaked == [], f"processes left running: {leaked}"


@pytest.fixture
async def supervisor(processes: Processes) -> AsyncIterator[PodSupervisor]:
    sup = PodSupervisor(probe_timeout=0.5, backoff_base=0.05, backoff_cap=0.2)
    try:
        yield sup
    finally:
        async with asyncio.timeout(15):
            await sup.close()


async def orphaned(spec: PodSpec, processes: Processes) -> tuple[float, list[ContainerProcess]]:
    """Run `spec` under a supervisor in another process, then SIGKILL that process."""
    raw = {
        "name": spec.name,
        "log_dir": str(spec.log_dir),
        "containers": [dataclasses.asdict(c) for c in spec.containers],
    }
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FIRST_SUPERVISOR, json.dumps(raw), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert first.stdout is not None
        line = await asyncio.wait_for(first.stdout.readline(), 20)
        report = json.loads(line)
    finally:
        first.kill()
        await first.wait()
    containers = [ContainerProcess(**c) for c in report["containers"]]
    processes.saw(*(c.pid for c in containers))
    return float(report["started_at"]), containers


async def get(status: PodStatus) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://{status.host}:{status.port}/")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_adopted_pod_keeps_serving_and_is_stopped_by_its_group(
    supervisor: PodSupervisor, processes: Processes, tmp_path: Path
) -> None:
    spec = pod_spec("web-abc12", tmp_path, demo())
    async with asyncio.timeout(30):
        started_at, records = await orphaned(spec, processes)
        (record,) = records
        assert record.pid is not None and record.start_time == process_start_time(record.pid)
        assert alive(record.pid), "the pod outlives its supervisor"

        status = await supervisor.adopt(spec, records, started_at=started_at)
        assert status.ready, "probed once before adopt returns: an adopted pod serves at once"
        assert status.phase is PodPhase.RUNNING
        assert status.pids == (record.pid,) and status.port == record.port
        assert status.started_at == started_at and status.restarts == 0
        assert status.containers[0].start_time == record.start_time
        assert await get(status) == {"version": "v1", "pod": "web-abc12"}

        await supervisor.stop_pod("web-abc12")
        assert supervisor.status("web-abc12") is None
        assert not alive(record.pid), "stopping signals the adopted process group"


async def test_adopted_container_that_dies_restarts_on_its_port(
    supervisor: PodSupervisor, processes: Processes, tmp_path: Path
) -> None:
    spec = pod_spec("web-def34", tmp_path, demo())
    async with asyncio.timeout(30):
        started_at, records = await orphaned(spec, processes)
        status = await supervisor.adopt(spec, records, started_at=started_at)
        old_pid = status.pids[0]
        os.kill(old_pid, signal.SIGKILL)  # not our child: noticed by polling /proc
        await eventually(lambda: (s := supervisor.status(spec.name)) is not None and s.restarts == 1, "a restart")
        restarted = supervisor.status(spec.name)
        assert restarted is not None
        processes.saw(*restarted.pids)
        assert restarted.exit_code is None, "an adopted process's exit code is unknown"
        await supervisor.wait_ready(spec.name, 10)
        again = supervisor.status(spec.name)
        assert again is not None and again.ready
        assert again.port == status.port, "the container keeps its PORT"
        assert again.pids and again.pids[0] != old_pid
        assert await get(again) == {"version": "v1", "pod": "web-def34"}


async def test_only_the_gone_container_is_started_again(
    supervisor: PodSupervisor, processes: Processes, tmp_path: Path
) -> None:
    spec = pod_spec("web-ghi56", tmp_path, demo(), sidecar())
    async with asyncio.timeout(30):
        started_at, records = await orphaned(spec, processes)
        app, side = records
        assert app.pid is not None and side.pid is not None
        os.killpg(side.pid, signal.SIGKILL)
        await eventually(lambda: not alive(side.pid or 0), "the sidecar to die")

        status = await supervisor.adopt(spec, records, started_at=started_at)
        processes.saw(*status.pids)
        by_name = {c.name: c for c in status.containers}
        assert by_name["demo"].pid == app.pid and by_name["demo"].restarts == 0
        assert by_name["sidecar"].pid not in (None, side.pid) and by_name["sidecar"].restarts == 1
        assert status.restarts == 1
        await supervisor.wait_ready(spec.name, 10)


async def test_a_reused_pid_is_neither_adopted_nor_signalled(
    supervisor: PodSupervisor, processes: Processes, tmp_path: Path
) -> None:
    # A live process that happens to have the recorded PID, but started at another time.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        start = process_start_time(stranger.pid)
        assert start is not None
        assert process_is(stranger.pid, start) and not process_is(stranger.pid, start + 1)
        spec = pod_spec("web-jkl78", tmp_path, demo())
        record = ContainerProcess(name="demo", port=free_port(), pid=stranger.pid, start_time=start + 1)
        async with asyncio.timeout(20):
            status = await supervisor.adopt(spec, [record], started_at=time.time())
            processes.saw(*status.pids)
            assert status.pids and status.pids[0] != stranger.pid, "started anew, not adopted"
            assert status.restarts == 1 and status.port == record.port
            await supervisor.wait_ready(spec.name, 10)
            await supervisor.stop_pod(spec.name)
        assert stranger.poll() is None, "someone else's process is never signalled"
    finally:
        stranger.kill()
        stranger.wait()


async def test_detach_leaves_pods_running_for_the_next_supervisor(processes: Processes, tmp_path: Path) -> None:
    spec = pod_spec("web-mno90", tmp_path, demo())
    first = PodSupervisor(probe_timeout=0.5)
    second = PodSupervisor(probe_timeout=0.5)
    try:
        async with asyncio.timeout(30):
            await first.start_pod(spec)
            status = await first.wait_ready(spec.name, 10)
            processes.saw(*status.pids)
            await first.detach()
            assert first.status(spec.name) is None
            assert alive(status.pids[0]), "detach does not stop the pod"

            adopted = await second.adopt(spec, status.containers, started_at=status.started_at)
            assert adopted.ready and adopted.pids == status.pids
            assert await get(adopted) == {"version": "v1", "pod": "web-mno90"}
    finally:
        await first.close()
        await second.close()
    assert not alive(status.pids[0])


async def test_session_leaders_are_found_by_environment(processes: Processes) -> None:
    token = f"adoption-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "ROLLOUTS_TEST_TOKEN": token}
    # The leader starts a child of its own, in its session: only the leader is reported.
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], env=env, start_new_session=True)
    processes.saw(leader.pid)
    try:
        await eventually(lambda: find_session_leaders("ROLLOUTS_TEST_TOKEN", {token}) == {leader.pid: token}, "it")
        assert find_session_leaders("ROLLOUTS_TEST_TOKEN", {"other"}) == {}
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


# --- the runtime's side: which recorded processes are ours ----------------------------------------


def pod_object(name: str, rs: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}, "ownerReferences": [{"kind": "ReplicaSet", "name": rs}]},
        "spec": {"containers": [{"name": "app", "image": "demo:v1", "command": list(DEMO)}]},
        "status": status,
    }


def sleeper(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], env={**os.environ, **env}, start_new_session=True)


async def test_runtime_start_adopts_only_its_own_processes(processes: Processes, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.create(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web-1"},
            "spec": {"replicas": 0, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
        }
    )
    # Started, then the controller died before recording it: found by the pod UID it carries.
    pending = store.create(pod_object("web-1-aaaaa", "web-1", {"phase": "Pending", "ready": False}))
    unrecorded = sleeper({POD_UID_ENV: pending["metadata"]["uid"]})
    # Recorded by an older version (pids only): found by POD_NAME.
    store.create(pod_object("web-1-bbbbb", "web-1", {"phase": "Running", "pids": []}))
    legacy = sleeper({"POD_NAME": "web-1-bbbbb"})
    legacy_pod = store.must_get("Pod", "web-1-bbbbb")
    legacy_pod["status"]["pids"] = [legacy.pid]
    store.update_status(legacy_pod)
    # Ours, but its ReplicaSet is gone.
    orphan = sleeper({})
    start = process_start_time(orphan.pid)
    record = {"name": "app", "pid": orphan.pid, "processStartTime": start, "port": free_port()}
    store.create(pod_object("web-0-ccccc", "web-0", {"phase": "Running", "containerStatuses": [record]}))
    # A recorded PID now used by someone else (another start time): not ours, never signalled.
    stranger = sleeper({})
    reused = {"name": "app", "pid": stranger.pid, "processStartTime": 1, "port": free_port()}
    store.create(pod_object("web-1-ddddd", "web-1", {"phase": "Running", "containerStatuses": [reused]}))
    processes.saw(unrecorded.pid, legacy.pid, orphan.pid, stranger.pid)

    runtime = EmbeddedRuntime(store, tmp_path / "state.d", ProxyServer(ProxyMetrics()))
    try:
        async with asyncio.timeout(10):
            await runtime.start()
        for killed in (unrecorded, legacy, orphan):
            assert killed.wait(timeout=5) == -signal.SIGKILL
        assert stranger.poll() is None, "a reused PID is left alone"
        assert store.list("Pod") == [], "no pod had a process of ours left: all deleted (replicas: 0)"
    finally:
        await runtime.close()
        stranger.kill()
        stranger.wait()
        store.close()
