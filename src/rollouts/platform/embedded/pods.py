"""The embedded platform's pod supervisor: a pod is a set of local processes, one per container.

Every container process

* runs `command + args` (`command[0]` looked up in `PATH`) in its own session and process group,
  so stopping a pod signals the whole group and leaves no orphans behind;
* gets a small environment: the parent's `PATH`, `HOME`, `LANG` (and `VIRTUAL_ENV`,
  `PYTHONPATH` when set), the container's `env`, then `PORT` (a free loopback port picked for
  that container, kept across restarts), `ROLLOUTS_IMAGE` and `POD_NAME`;
* appends stdout and stderr to `<log_dir>/<pod>/<container>.log`; when the container restarts
  the previous log is kept as `<container>.previous.log`.

Probes: a container's readiness, liveness and startup probes (`ContainerSpec.probes`, built
from the manifest by `probespec.from_container`) run with Kubernetes' semantics while its process
runs: `probes.py` decides (thresholds, startup gating), `prober.py` runs them (httpGet, tcpSocket,
exec). A container whose readiness fails is not ready; one whose liveness or startup probe fails
is stopped like a pod (SIGTERM, SIGKILL after the grace period) and restarted like a crashed one,
its message reading `CrashLoopBackOff: container <name> was killed: Liveness probe failed: ...`.
Without a readiness probe in `probes`, a container with a `readiness_path` gets an HTTP readiness
probe on `PORT` every `readiness_period_seconds`, settled by each result; failing that, the pod's
first container (the one traffic goes to) is ready once it accepts a TCP connection on `PORT`,
and any other container as soon as its process runs (see `probespec.effective`). A pod is ready
when all its containers are. `on_event` hears what Kubernetes would record as events: a probe
making a container unready or killing it (Warning, Unhealthy) and the kill (Normal, Killing).

Crashes: a container whose process exits (whatever the code) is restarted after an exponential
back-off (`backoff_base`, doubled per consecutive crash, capped at `backoff_cap`; the count is
reset once a process has run for `backoff_reset` seconds). While it is down the pod is not
ready and its message reads `CrashLoopBackOff: container <name> exited with code <code>`.
Whatever is left of the crashed process group is killed before the restart.

Exit codes follow the shell convention: a process killed by signal N has exit code 128 + N.

`on_change` is called, on the event loop thread, whenever a pod's phase, readiness, restart
count, message or container processes change. Stopped pods are reported once with phase
`Stopped` and then forgotten (`status()` returns None for them).

Adoption: container processes outlive the supervisor that started them (they run in their own
sessions), so a supervisor in a restarted controller can take them over with `adopt`. A process
is identified by its PID *and* its start time (`/proc/<pid>/stat` field 22, clock ticks since
boot), which every `PodStatus` reports per container (`ContainerProcess`): a live PID with
another start time is a reused PID, someone else's process, and is never signalled. An adopted
process is not our child, so its exit is noticed by polling `/proc` and its exit code is
unknown; its readiness is probed once before `adopt` returns, then as usual, and it is stopped
by signalling its process group. A container whose process is gone is started again, as a
normal child, on the port it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from rollouts import processgroups
from rollouts.platform.embedded import prober, probespec
from rollouts.platform.embedded.podspec import ContainerSpec, PodSpec
from rollouts.platform.embedded.ports import free_port, release_port
from rollouts.platform.embedded.probes import ContainerHealth, Verdict
from rollouts.platform.embedded.probespec import ContainerProbes, Probe, ProbeKind
from rollouts.platform.embedded.processes import (
    AdoptedProcess,
    find_session_leaders,
    process_is,
    process_start_time,
)
from rollouts.tasks import stop_tasks

__all__ = [
    "ContainerProcess",
    "PodEvent",
    "PodFailedError",
    "PodPhase",
    "PodStatus",
    "PodSupervisor",
    "Termination",
    "find_session_leaders",
    "process_is",
    "process_start_time",
]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_INHERITED_ENV = ("PATH", "HOME", "LANG", "VIRTUAL_ENV", "PYTHONPATH")
_POLL_SECONDS = 0.05
_KILL_WAIT_SECONDS = 5.0


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    STOPPED = "Stopped"


@dataclass(frozen=True)
class Termination:
    """How a container's previous process ended (Kubernetes' `lastState.terminated`)."""

    exit_code: int | None  # None: unknown (an adopted process)
    reason: str  # "Completed" (exit code 0), "Error", or "Unknown"
    message: str = ""  # why it was killed: "Liveness probe failed: ..."; "" when it exited


@dataclass(frozen=True)
class ContainerProcess:
    """One container's process, as `PodStatus` reports it and `PodSupervisor.adopt` takes it back.

    `pid` and `start_time` (`/proc/<pid>/stat` starttime, clock ticks since boot) are None
    while the container has no running process; `port` is its PORT, kept across restarts.
    """

    name: str
    port: int
    pid: int | None
    start_time: int | None
    ready: bool = False
    restarts: int = 0
    last_termination: Termination | None = None

    def last_state(self) -> dict[str, dict[str, object]]:
        """`last_termination` as a Kubernetes `containerStatuses[].lastState`."""
        end = self.last_termination
        if end is None:
            return {}
        terminated: dict[str, object] = {"reason": end.reason}
        if end.exit_code is not None:
            terminated["exitCode"] = end.exit_code
        if end.message:
            terminated["message"] = end.message
        return {"terminated": terminated}


@dataclass(frozen=True)
class PodEvent:
    """Something Kubernetes would record as an Event about the pod."""

    pod: str
    type: str  # "Normal" or "Warning"
    reason: str  # "Unhealthy", "Killing"
    message: str


@dataclass(frozen=True)
class PodStatus:
    """A snapshot of one pod."""

    name: str
    phase: PodPhase
    ready: bool
    host: str
    port: int  # the first container's PORT: where traffic goes
    pids: tuple[int, ...]  # the running container processes, in container order
    restarts: int  # summed over containers
    started_at: float  # time.time() when the pod was started
    ready_since: float | None  # time.time() when the pod last became ready
    exit_code: int | None  # the last exit code seen (128 + N for signal N)
    message: str
    log_paths: dict[str, str] = field(default_factory=dict)  # container name -> current log file
    containers: tuple[ContainerProcess, ...] = ()  # every container, in container order


class PodFailedError(RuntimeError):
    """`wait_ready` on a pod that failed to start or was stopped."""


async def _cancel_and_wait(task: asyncio.Task[None]) -> bool:
    """Cancel `task` and wait until it has cleaned up, even when cancelled meanwhile: a second
    cancel would cut an exec probe's cleanup short and leave its command running. Returns
    whether we were cancelled meanwhile (the caller decides whether to raise it)."""
    task.cancel()
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if not task.cancelled() and task.exception() is not None:
        log.error("probes failed", exc_info=task.exception())
    return cancelled


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _describe_exit(returncode: int) -> str:
    text = f"exited with code {_exit_code(returncode)}"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            text += f" ({signal.Signals(-returncode).name})"
    return text


_Process = asyncio.subprocess.Process | AdoptedProcess


class _Container:
    def __init__(self, spec: ContainerSpec, *, pod_dir: Path, port: int, probes: ContainerProbes) -> None:
        self.spec = spec
        self.port = port
        self.log_path = pod_dir / f"{spec.name}.log"
        self.previous_log_path = pod_dir / f"{spec.name}.previous.log"
        self.probes = probes  # what runs: see probespec.effective
        self.health: ContainerHealth | None = None  # of the current process
        self.kill_reason: str | None = None  # a probe failure the current process is being killed for
        self.last_termination: Termination | None = None
        self.proc: _Process | None = None
        self.start_time: int | None = None  # of the current (or last) process: see process_start_time
        self.pgid: int | None = None  # group of the current (or last) process; may outlive it
        self.lingering: set[int] = set()  # groups of crashed processes being killed
        self.started_mono = 0.0
        self.ready = False
        self.restarts = 0
        self.crashes = 0  # consecutive, for the back-off
        self.crash_message = ""
        self.probe_message = ""
        self.exit_code: int | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def groups(self) -> set[int]:
        groups = set(self.lingering)
        if self.pgid is not None:
            groups.add(self.pgid)
        return groups


class _Pod:
    def __init__(self, spec: PodSpec, containers: list[_Container]) -> None:
        self.spec = spec
        self.containers = containers
        self.phase = PodPhase.PENDING
        self.started_at = time.time()
        self.ready_since: float | None = None
        self.exit_code: int | None = None
        self.message = ""  # overrides the containers' messages (Failed, Terminating, Stopped)
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self.detached = False  # left running for another supervisor: never signalled by us again
        self.last_key: tuple[object, ...] | None = None

    @property
    def port(self) -> int:
        return self.containers[0].port if self.containers else 0


class PodSupervisor:
    """Runs pods as local process groups; see the module docstring."""

    def __init__(
        self,
        *,
        on_change: Callable[[PodStatus], None] | None = None,
        on_event: Callable[[PodEvent], None] | None = None,
        probe_timeout: float = 1.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        backoff_reset: float = 10.0,
    ) -> None:
        self._on_change = on_change
        self._on_event = on_event
        self._probe_timeout = probe_timeout  # of the probes the manifest does not give (no timeoutSeconds)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._backoff_reset = backoff_reset
        self._pods: dict[str, _Pod] = {}
        self._changed_event = asyncio.Event()
        self._closed = False

    # -- public API ---------------------------------------------------------------------------

    async def start_pod(self, spec: PodSpec) -> PodStatus:
        """Spawn the pod's processes and return at once (phase Running, not ready yet).

        A pod that cannot be started at all (a container without `command`, an executable not
        found) is returned with phase Failed and a message naming the container; no process
        runs for it. Raises ValueError if a pod of that name is already supervised.
        """
        if self._closed:
            raise RuntimeError("PodSupervisor is closed")
        if spec.name in self._pods:
            raise ValueError(f"pod {spec.name} already exists")
        pod_dir = spec.log_dir / spec.name
        pod = _Pod(spec, [])
        self._pods[spec.name] = pod

        problem = self._validate(spec)
        if problem is not None:
            pod.phase = PodPhase.FAILED
            pod.message = problem
            self._changed(pod)
            return self._snapshot(pod)

        pod.containers = [
            _Container(c, pod_dir=pod_dir, port=free_port(LOOPBACK), probes=self._probes(c, traffic=i == 0))
            for i, c in enumerate(spec.containers)
        ]
        try:
            pod_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._release_ports(pod)
            pod.phase = PodPhase.FAILED
            pod.message = f"cannot create log directory {pod_dir}: {exc}"
            self._changed(pod)
            return self._snapshot(pod)

        pod.phase = PodPhase.RUNNING
        spawned: list[asyncio.subprocess.Process] = []
        try:
            for container in pod.containers:
                initial: asyncio.subprocess.Process | Exception
                try:
                    initial = await self._spawn(pod, container)
                    spawned.append(initial)
                except (OSError, ValueError) as exc:
                    initial = exc
                container.task = asyncio.create_task(
                    self._run_container(pod, container, initial),
                    name=f"pod {spec.name}/{container.spec.name}",
                )
        except BaseException:  # cancelled half-way: leave nothing behind
            for proc in spawned:
                processgroups.signal_group(proc.pid, signal.SIGKILL)
            raise
        # Let the container tasks record their processes before reporting.
        await asyncio.sleep(0)
        self._changed(pod)
        return self._snapshot(pod)

    async def adopt(self, spec: PodSpec, processes: Sequence[ContainerProcess], *, started_at: float) -> PodStatus:
        """Supervise a pod whose processes an earlier supervisor started; return its status.

        `processes` are the pod's containers as a `PodStatus` reported them (`containers`),
        matched to `spec` by name. A container whose PID is still the process that started at
        its `start_time` is adopted: probed once before this returns (a pod that serves is ready
        at once), then supervised like any other. Any other container is started again as a
        normal child, on its recorded port, and counts a restart. Raises ValueError if a pod of
        that name is already supervised.
        """
        if self._closed:
            raise RuntimeError("PodSupervisor is closed")
        if spec.name in self._pods:
            raise ValueError(f"pod {spec.name} already exists")
        records = {record.name: record for record in processes}
        pod_dir = spec.log_dir / spec.name
        pod = _Pod(spec, [])
        pod.started_at = started_at
        pod.phase = PodPhase.RUNNING
        self._pods[spec.name] = pod
        initial: list[AdoptedProcess | None] = []
        for index, container_spec in enumerate(spec.containers):
            record = records.get(container_spec.name)
            container = _Container(
                container_spec,
                pod_dir=pod_dir,
                port=record.port if record is not None and record.port else free_port(LOOPBACK),
                probes=self._probes(container_spec, traffic=index == 0),
            )
            pod.containers.append(container)
            adopted: AdoptedProcess | None = None
            if record is not None:
                container.restarts = record.restarts
                if (
                    record.pid is not None
                    and record.start_time is not None
                    and process_is(record.pid, record.start_time)
                ):
                    adopted = AdoptedProcess(record.pid, record.start_time)
            initial.append(adopted)
        with contextlib.suppress(OSError):
            pod_dir.mkdir(parents=True, exist_ok=True)

        loop = asyncio.get_running_loop()

        async def first_probe(container: _Container) -> None:
            health = container.health = ContainerHealth(container.probes, started_at=loop.time(), adopted=True)
            readiness = container.probes.readiness
            if readiness is not None:
                at = loop.time()
                env = self._env(spec, container.spec, container.port)
                outcome = await prober.run(readiness.handler, port=container.port, timeout=readiness.timeout, env=env)
                health.adopted_probe(outcome.ok, outcome.message, at=at)
            container.ready = health.ready
            container.probe_message = health.message

        await asyncio.gather(
            *(first_probe(c) for c, proc in zip(pod.containers, initial, strict=True) if proc is not None)
        )
        spawned: list[asyncio.subprocess.Process] = []
        try:
            for container, proc in zip(pod.containers, initial, strict=True):
                attempt: _Process | Exception
                if proc is not None:
                    attempt = proc
                else:
                    log.info("pod %s: container %s is gone, starting it again", spec.name, container.spec.name)
                    container.restarts += 1
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(container.log_path, container.previous_log_path)
                    try:
                        attempt = await self._spawn(pod, container)
                        spawned.append(attempt)
                    except (OSError, ValueError) as exc:
                        attempt = exc
                container.task = asyncio.create_task(
                    self._run_container(pod, container, attempt),
                    name=f"pod {spec.name}/{container.spec.name}",
                )
        except BaseException:  # cancelled half-way: leave nothing of ours behind
            for started in spawned:
                processgroups.signal_group(started.pid, signal.SIGKILL)
            raise
        await asyncio.sleep(0)
        self._changed(pod)
        return self._snapshot(pod)

    async def stop_pod(self, name: str) -> None:
        """SIGTERM every container's process group, SIGKILL what is left after the pod's
        `termination_grace_seconds`, and return once every process is gone. Unknown names are
        ignored; stopping a pod that is already stopping waits for that stop to finish."""
        pod = self._pods.get(name)
        if pod is None:
            return
        if pod.stopping.is_set():
            await pod.stopped.wait()
            return
        pod.stopping.set()
        grace = max(0.0, pod.spec.termination_grace_seconds)
        if pod.phase is PodPhase.RUNNING:
            pod.phase = PodPhase.TERMINATING
            pod.message = f"Terminating: SIGTERM sent, grace period {grace:g}s"
            self._changed(pod)
        loop = asyncio.get_running_loop()
        killed = False
        try:
            for container in pod.containers:
                for pgid in container.groups():
                    processgroups.signal_group(pgid, signal.SIGTERM)
            if not await self._wait_gone(pod, loop.time() + grace):
                killed = True
                for container in pod.containers:
                    for pgid in container.groups():
                        processgroups.signal_group(pgid, signal.SIGKILL)
                if not await self._wait_gone(pod, loop.time() + _KILL_WAIT_SECONDS):
                    log.warning("pod %s: processes still present after SIGKILL", name)
            tasks = [c.task for c in pod.containers if c.task is not None and not c.task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._release_ports(pod)
            if pod.phase is not PodPhase.FAILED:
                first = pod.containers[0].exit_code if pod.containers else None
                if first is not None:
                    pod.exit_code = first
                pod.phase = PodPhase.STOPPED
                pod.message = "Stopped: killed after grace period" if killed else "Stopped"
            else:
                pod.phase = PodPhase.STOPPED
            for container in pod.containers:
                container.ready = False
            self._changed(pod)
            if self._pods.get(name) is pod:
                del self._pods[name]
            pod.stopped.set()

    def status(self, name: str) -> PodStatus | None:
        pod = self._pods.get(name)
        return None if pod is None else self._snapshot(pod)

    def pods(self) -> list[PodStatus]:
        return [self._snapshot(pod) for pod in self._pods.values()]

    async def wait_ready(self, name: str, timeout: float) -> PodStatus:
        """Wait until the pod is ready. Raises TimeoutError (with the pod's message) after
        `timeout` seconds, PodFailedError if the pod failed to start or stopped, LookupError if
        there is no such pod."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = self.status(name)
            if status is None:
                raise LookupError(f"no pod {name}")
            if status.ready:
                return status
            if status.phase in (PodPhase.FAILED, PodPhase.STOPPED, PodPhase.TERMINATING):
                raise PodFailedError(f"pod {name} is {status.phase.value}: {status.message}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"pod {name} not ready after {timeout:g}s: {status.message}")
            event = self._changed_event
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()

    async def detach(self) -> None:
        """Stop supervising every pod but leave its processes running, for another supervisor to
        adopt (a controller that lost its lease). No callback is made; the supervisor is closed."""
        self._closed = True
        tasks: list[asyncio.Task[None]] = []
        for pod in self._pods.values():
            pod.detached = True
            tasks.extend(c.task for c in pod.containers if c.task is not None)
        await stop_tasks(tasks)
        self._pods.clear()

    async def close(self) -> None:
        """Stop every pod; no process is left behind."""
        self._closed = True
        if self._pods:
            await asyncio.gather(*(self.stop_pod(name) for name in list(self._pods)))

    # -- containers ---------------------------------------------------------------------------

    def _validate(self, spec: PodSpec) -> str | None:
        if not spec.containers:
            return "CreateContainerError: pod has no containers"
        for container in spec.containers:
            try:
                self._argv(spec, container)
            except ValueError as exc:
                return f"CreateContainerError: {exc}"
            if container.probes is not None and container.probes.error:
                return f"CreateContainerError: container {container.name}: {container.probes.error}"
        return None

    def _probes(self, spec: ContainerSpec, *, traffic: bool) -> ContainerProbes:
        return probespec.effective(
            spec.probes,
            readiness_path=spec.readiness_path,
            readiness_period=spec.readiness_period_seconds,
            readiness_initial_delay=spec.readiness_initial_delay_seconds,
            traffic=traffic,
            timeout=self._probe_timeout,
        )

    def _env(self, spec: PodSpec, container: ContainerSpec, port: int) -> dict[str, str]:
        env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
        env.update(container.env)
        env["PORT"] = str(port)
        env["ROLLOUTS_IMAGE"] = container.image
        env["POD_NAME"] = spec.name
        return env

    def _argv(self, spec: PodSpec, container: ContainerSpec) -> list[str]:
        if not container.command:
            raise ValueError(
                f"container {container.name} (image {container.image}) has no command: "
                "the embedded platform needs `command` (it cannot run an image's entrypoint)"
            )
        program = container.command[0]
        if os.sep not in program:
            path = self._env(spec, container, 0).get("PATH", os.defpath)
            found = shutil.which(program, path=path)
            if found is None:
                raise ValueError(f"container {container.name}: executable {program!r} not found in PATH")
            program = found
        return [program, *container.command[1:], *container.args]

    async def _spawn(self, pod: _Pod, container: _Container) -> asyncio.subprocess.Process:
        argv = self._argv(pod.spec, container.spec)
        env = self._env(pod.spec, container.spec, container.port)
        container.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(container.log_path, "ab") as log_file:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    async def _run_container(self, pod: _Pod, container: _Container, initial: _Process | Exception) -> None:
        name = container.spec.name
        loop = asyncio.get_running_loop()
        attempt: _Process | Exception | None = initial
        try:
            while True:
                if attempt is None:
                    if pod.stopping.is_set():
                        break
                    container.restarts += 1
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(container.log_path, container.previous_log_path)
                    try:
                        attempt = await self._spawn(pod, container)
                    except (OSError, ValueError) as exc:
                        attempt = exc
                ran = 0.0
                if isinstance(attempt, Exception):
                    message = f"CrashLoopBackOff: container {name} failed to start: {attempt}"
                else:
                    proc = attempt
                    adopted = isinstance(proc, AdoptedProcess)
                    container.proc = proc
                    container.pgid = proc.pid
                    container.start_time = (
                        proc.start_time if isinstance(proc, AdoptedProcess) else process_start_time(proc.pid)
                    )
                    container.started_mono = loop.time()
                    if pod.stopping.is_set():  # stop_pod ran while we were spawning
                        processgroups.signal_group(proc.pid, signal.SIGKILL)
                        await proc.wait()
                        break
                    if not adopted or container.health is None:  # adopt() probed an adopted one
                        container.health = ContainerHealth(container.probes, started_at=container.started_mono)
                    container.ready = container.health.ready
                    if container.ready:
                        container.crash_message = ""
                    self._changed(pod)
                    returncode = await self._watch(pod, container, proc)
                    ran = loop.time() - container.started_mono
                    container.ready = False
                    container.health = None
                    killed_for, container.kill_reason = container.kill_reason, None
                    container.exit_code = pod.exit_code = None if adopted else _exit_code(returncode)
                    if pod.stopping.is_set():
                        self._changed(pod)
                        break
                    # Kill whatever the crashed process left in its group before restarting.
                    processgroups.signal_group(proc.pid, signal.SIGKILL)
                    container.lingering.add(proc.pid)
                    container.last_termination = Termination(
                        container.exit_code,
                        "Unknown" if adopted else "Completed" if container.exit_code == 0 else "Error",
                        killed_for or "",
                    )
                    if killed_for is not None:
                        message = f"CrashLoopBackOff: container {name} was killed: {killed_for}"
                    else:
                        exited = (
                            "exited (adopted process: exit code unknown)" if adopted else _describe_exit(returncode)
                        )
                        message = f"CrashLoopBackOff: container {name} {exited}"
                    log.info("pod %s: %s", pod.spec.name, message)
                attempt = None
                container.lingering = {g for g in container.lingering if processgroups.group_alive(g)}
                if ran >= self._backoff_reset:
                    container.crashes = 0
                delay = min(self._backoff_base * 2**container.crashes, self._backoff_cap)
                container.crashes += 1
                container.crash_message = message
                container.probe_message = ""
                self._changed(pod)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await pod.stopping.wait()
        except asyncio.CancelledError:
            # Never leave a process behind, even when cancelled from outside (unless detached).
            if not pod.detached:
                for pgid in container.groups():
                    processgroups.signal_group(pgid, signal.SIGKILL)
            raise

    async def _watch(self, pod: _Pod, container: _Container, proc: _Process) -> int:
        """Probe the container while its process runs; return the process's return code."""
        health = container.health
        if health is None or not health.kinds():
            return await proc.wait()
        probing = asyncio.create_task(self._probe(pod, container, proc, health))
        try:
            returncode = await proc.wait()
        except asyncio.CancelledError:
            await _cancel_and_wait(probing)
            raise
        # stop_pod cancels the container task once the process is gone, maybe while its probes
        # wind down: the exit code is still recorded then.
        if await _cancel_and_wait(probing) and not pod.stopping.is_set():
            raise asyncio.CancelledError
        return returncode

    async def _probe(self, pod: _Pod, container: _Container, proc: _Process, health: ContainerHealth) -> None:
        env = self._env(pod.spec, container.spec, container.port)

        async def run(probe: Probe) -> prober.Outcome:
            return await prober.run(probe.handler, port=container.port, timeout=probe.timeout, env=env)

        killed = await prober.run_probes(
            health,
            run=run,
            alive=lambda: proc.returncode is None,
            on_verdict=lambda verdict: self._health_changed(pod, container, health, verdict),
        )
        if killed is not None:
            await self._kill_unhealthy(pod, container, proc, *killed)

    def _health_changed(self, pod: _Pod, container: _Container, health: ContainerHealth, verdict: Verdict) -> None:
        container.ready = health.ready
        container.probe_message = health.message
        if container.ready:
            container.crash_message = ""
        if verdict.event is not None:
            self._event(pod, "Warning", "Unhealthy", verdict.event)
        self._changed(pod)

    async def _kill_unhealthy(
        self, pod: _Pod, container: _Container, proc: _Process, kind: ProbeKind, reason: str
    ) -> None:
        """Stop a container that failed its liveness or startup probe as a pod is stopped
        (SIGTERM, then SIGKILL after the grace period); `_run_container` sees the process end and
        restarts it, with its back-off, as after a crash."""
        name = container.spec.name
        container.kill_reason = reason
        log.info(
            "pod %s: container %s failed its %s probe, killing it: %s", pod.spec.name, name, kind.value.lower(), reason
        )
        self._event(pod, "Normal", "Killing", f"Container {name} failed {kind.value.lower()} probe, will be restarted")
        processgroups.signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, pod.spec.termination_grace_seconds)):
                await proc.wait()
        processgroups.signal_group(proc.pid, signal.SIGKILL)

    # -- bookkeeping --------------------------------------------------------------------------

    async def _wait_gone(self, pod: _Pod, deadline: float) -> bool:
        """Wait until every container task has seen its process exit and every process group
        of the pod is empty; False if `deadline` (loop time) passes first."""
        loop = asyncio.get_running_loop()
        procs = [c.proc.wait() for c in pod.containers if c.proc is not None and c.proc.returncode is None]
        if procs:
            waiters = [asyncio.ensure_future(p) for p in procs]
            _, pending = await asyncio.wait(waiters, timeout=max(0.0, deadline - loop.time()))
            for waiter in pending:
                waiter.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                return False
        while True:
            if not any(processgroups.group_alive(g) for c in pod.containers for g in c.groups()):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)

    def _release_ports(self, pod: _Pod) -> None:
        for container in pod.containers:
            release_port(container.port)

    def _snapshot(self, pod: _Pod) -> PodStatus:
        ready = pod.phase is PodPhase.RUNNING and all(c.ready for c in pod.containers)
        if pod.message:
            message = pod.message
        elif ready:
            message = ""
        else:
            message = next((c.crash_message for c in pod.containers if c.crash_message), "")
            if not message:
                message = next((c.probe_message for c in pod.containers if not c.ready and c.probe_message), "")
            if not message:
                unready = ", ".join(c.spec.name for c in pod.containers if not c.ready)
                message = f"containers with unready status: [{unready}]"
        return PodStatus(
            name=pod.spec.name,
            phase=pod.phase,
            ready=ready,
            host=LOOPBACK,
            port=pod.port,
            pids=tuple(c.proc.pid for c in pod.containers if c.proc is not None and c.running),
            restarts=sum(c.restarts for c in pod.containers),
            started_at=pod.started_at,
            ready_since=pod.ready_since if ready else None,
            exit_code=pod.exit_code,
            message=message,
            log_paths={c.spec.name: str(c.log_path) for c in pod.containers},
            containers=tuple(
                ContainerProcess(
                    name=c.spec.name,
                    port=c.port,
                    pid=c.proc.pid if c.proc is not None and c.running else None,
                    start_time=c.start_time if c.running else None,
                    ready=c.ready,
                    restarts=c.restarts,
                    last_termination=c.last_termination,
                )
                for c in pod.containers
            ),
        )

    def _changed(self, pod: _Pod) -> None:
        """Record a state change; tell on_change and waiters if anything they see changed."""
        status = self._snapshot(pod)
        if status.ready and pod.ready_since is None:
            pod.ready_since = time.time()
            status = self._snapshot(pod)
        elif not status.ready:
            pod.ready_since = None
        key = (status.phase, status.ready, status.restarts, status.message, status.pids)
        if key == pod.last_key:
            return
        pod.last_key = key
        event, self._changed_event = self._changed_event, asyncio.Event()
        event.set()
        if self._on_change is not None:
            try:
                self._on_change(status)
            except Exception:
                log.exception("pod %s: on_change callback failed", pod.spec.name)

    def _event(self, pod: _Pod, type_: str, reason: str, message: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(PodEvent(pod.spec.name, type_, reason, message))
        except Exception:
            log.exception("pod %s: on_event callback failed", pod.spec.name)
