"""The embedded platform's pod supervisor: a pod is a set of local processes, one per container.

Every container process

* runs `command + args` (`command[0]` looked up in `PATH`) in its own session and process group,
  so stopping a pod signals the whole group and leaves no orphans behind;
* gets a small environment: the parent's `PATH`, `HOME`, `LANG` (and `VIRTUAL_ENV`,
  `PYTHONPATH` when set), the container's `env`, then `PORT` (a free loopback port picked for
  that container, kept across restarts), `ROLLOUTS_IMAGE` and `POD_NAME`;
* appends stdout and stderr to `<log_dir>/<pod>/<container>.log`; when the container restarts
  the previous log is kept as `<container>.previous.log`.

Readiness: a container with a `readiness_path` is probed with an HTTP/1.0 GET on
`http://127.0.0.1:<PORT><readiness_path>` every `readiness_period_seconds` (after
`readiness_initial_delay_seconds`); 2xx and 3xx mean ready, anything else (or no answer within
`probe_timeout`) means not ready. Without a `readiness_path`, the pod's first container (the one
traffic goes to) is ready once its process runs and accepts a TCP connection on `PORT`; any
other container is ready as soon as its process runs. A pod is ready when all its containers
are.

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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from rollouts import processgroups
from rollouts.platform.embedded.podspec import ContainerSpec, PodSpec
from rollouts.platform.embedded.ports import free_port, release_port

__all__ = [
    "ContainerProcess",
    "PodFailedError",
    "PodPhase",
    "PodStatus",
    "PodSupervisor",
    "find_session_leaders",
    "process_is",
    "process_start_time",
]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_INHERITED_ENV = ("PATH", "HOME", "LANG", "VIRTUAL_ENV", "PYTHONPATH")
_POLL_SECONDS = 0.05
_TCP_POLL_SECONDS = 0.1
_KILL_WAIT_SECONDS = 5.0
_ADOPTED_POLL_SECONDS = 0.1


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    STOPPED = "Stopped"


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


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _describe_exit(returncode: int) -> str:
    text = f"exited with code {_exit_code(returncode)}"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            text += f" ({signal.Signals(-returncode).name})"
    return text


def _proc_stat(pid: int) -> list[bytes] | None:
    """The fields of `/proc/<pid>/stat` from field 3 (state) on; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (`/proc/<pid>/stat` field 22, clock ticks since boot); None if
    there is no such process."""
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def process_is(pid: int, start_time: int) -> bool:
    """Whether `pid` is the live (non-zombie) process that started at `start_time` and still leads
    its own process group, i.e. a container process we started: a reused PID is not."""
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return False
    try:
        return int(fields[19]) == start_time and int(fields[2]) == pid
    except ValueError:
        return False


def find_session_leaders(env_name: str, values: Collection[str]) -> dict[int, str]:
    """Live session leaders (as container processes are) whose environment sets `env_name` to
    one of `values`: pid -> value. Used to find container processes that were started but
    never recorded (a controller killed in between)."""
    wanted = {value.encode() for value in values}
    prefix = env_name.encode() + b"="
    found: dict[int, str] = {}
    if not wanted:
        return found
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        fields = _proc_stat(pid)
        if fields is None or len(fields) < 4 or fields[0] in (b"Z", b"X") or int(fields[3]) != pid:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except OSError:
            continue
        for variable in variables:
            if variable.startswith(prefix) and variable[len(prefix) :] in wanted:
                found[pid] = variable[len(prefix) :].decode()
                break
    return found


class _AdoptedProcess:
    """A container process started by an earlier supervisor. It is not our child, so there is no
    waitpid: its end is seen by polling `/proc`, and its exit code is unknown (`wait` returns 0)."""

    def __init__(self, pid: int, start_time: int) -> None:
        self.pid = pid
        self.start_time = start_time
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._returncode is None and not process_is(self.pid, self.start_time):
            self._returncode = 0
        return self._returncode

    async def wait(self) -> int:
        while self.returncode is None:
            await asyncio.sleep(_ADOPTED_POLL_SECONDS)
        return 0


_Process = asyncio.subprocess.Process | _AdoptedProcess


class _Container:
    def __init__(self, spec: ContainerSpec, *, pod_dir: Path, port: int, tcp_probe: bool) -> None:
        self.spec = spec
        self.port = port
        self.log_path = pod_dir / f"{spec.name}.log"
        self.previous_log_path = pod_dir / f"{spec.name}.previous.log"
        # No readiness_path: the traffic container must accept TCP; the others only run.
        self.tcp_probe = tcp_probe
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

    @property
    def needs_probe(self) -> bool:
        return self.spec.readiness_path is not None or self.tcp_probe

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
        probe_timeout: float = 1.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        backoff_reset: float = 10.0,
    ) -> None:
        self._on_change = on_change
        self._probe_timeout = probe_timeout
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
            _Container(
                c,
                pod_dir=pod_dir,
                port=free_port(LOOPBACK),
                tcp_probe=(i == 0 and c.readiness_path is None),
            )
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
        initial: list[_AdoptedProcess | None] = []
        for index, container_spec in enumerate(spec.containers):
            record = records.get(container_spec.name)
            container = _Container(
                container_spec,
                pod_dir=pod_dir,
                port=record.port if record is not None and record.port else free_port(LOOPBACK),
                tcp_probe=(index == 0 and container_spec.readiness_path is None),
            )
            pod.containers.append(container)
            adopted: _AdoptedProcess | None = None
            if record is not None:
                container.restarts = record.restarts
                if (
                    record.pid is not None
                    and record.start_time is not None
                    and process_is(record.pid, record.start_time)
                ):
                    adopted = _AdoptedProcess(record.pid, record.start_time)
            initial.append(adopted)
        with contextlib.suppress(OSError):
            pod_dir.mkdir(parents=True, exist_ok=True)

        async def first_probe(container: _Container) -> None:
            container.ready, container.probe_message = await self._probe(container)

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
            tasks.extend(c.task for c in pod.containers if c.task is not None and not c.task.done())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
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
        return None

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
                    adopted = isinstance(proc, _AdoptedProcess)
                    container.proc = proc
                    container.pgid = proc.pid
                    container.start_time = (
                        proc.start_time if isinstance(proc, _AdoptedProcess) else process_start_time(proc.pid)
                    )
                    container.started_mono = loop.time()
                    if pod.stopping.is_set():  # stop_pod ran while we were spawning
                        processgroups.signal_group(proc.pid, signal.SIGKILL)
                        await proc.wait()
                        break
                    if not adopted:  # an adopted container keeps what its first probe found
                        container.ready = not container.needs_probe
                    if container.ready:
                        container.crash_message = ""
                    self._changed(pod)
                    returncode = await self._watch(pod, container, proc)
                    ran = loop.time() - container.started_mono
                    container.ready = False
                    container.exit_code = pod.exit_code = None if adopted else _exit_code(returncode)
                    if pod.stopping.is_set():
                        self._changed(pod)
                        break
                    # Kill whatever the crashed process left in its group before restarting.
                    processgroups.signal_group(proc.pid, signal.SIGKILL)
                    container.lingering.add(proc.pid)
                    exited = "exited (adopted process: exit code unknown)" if adopted else _describe_exit(returncode)
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
        if not container.needs_probe:
            return await proc.wait()
        probe = asyncio.create_task(self._probe_loop(pod, container, proc))
        try:
            return await proc.wait()
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    async def _probe_loop(self, pod: _Pod, container: _Container, proc: _Process) -> None:
        spec = container.spec
        adopted = isinstance(proc, _AdoptedProcess)
        if adopted:  # probed once at adoption; long past any initial delay
            await asyncio.sleep(max(spec.readiness_period_seconds, 0.01))
        elif spec.readiness_initial_delay_seconds > 0:
            await asyncio.sleep(spec.readiness_initial_delay_seconds)
        period = max(spec.readiness_period_seconds, 0.01)
        ever_ready = adopted and container.ready
        while proc.returncode is None:
            ok, failure = await self._probe(container)
            if proc.returncode is not None:
                return
            container.ready = ok
            container.probe_message = "" if ok else failure
            if ok:
                ever_ready = True
                container.crash_message = ""
            self._changed(pod)
            if spec.readiness_path is None and not ever_ready:
                await asyncio.sleep(min(period, _TCP_POLL_SECONDS))
            else:
                await asyncio.sleep(period)

    async def _probe(self, container: _Container) -> tuple[bool, str]:
        """One readiness probe: (ready, the failure message or "")."""
        if container.spec.readiness_path is not None:
            return await self._http_probe(container.port, container.spec.readiness_path)
        if container.tcp_probe:
            return await self._tcp_probe(container.port)
        return True, ""

    async def _http_probe(self, port: int, path: str) -> tuple[bool, str]:
        if not path.startswith("/"):
            path = "/" + path
        url = f"http://{LOOPBACK}:{port}{path}"
        request = (
            f"GET {path} HTTP/1.0\r\nHost: {LOOPBACK}:{port}\r\nUser-Agent: rollouts-probe\r\nConnection: close\r\n\r\n"
        ).encode("latin-1", "replace")
        try:
            async with asyncio.timeout(self._probe_timeout):
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                try:
                    writer.write(request)
                    await writer.drain()
                    status_line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError:
            return False, f"readiness probe failed: GET {url} -> no answer within {self._probe_timeout:g}s"
        except ConnectionRefusedError:
            return False, f"readiness probe failed: GET {url} -> connection refused"
        except OSError as exc:
            return False, f"readiness probe failed: GET {url} -> {exc.strerror or exc}"
        parts = status_line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return False, f"readiness probe failed: GET {url} -> malformed response {status_line[:80]!r}"
        code = int(parts[1])
        if 200 <= code < 400:
            return True, ""
        return False, f"readiness probe failed: GET {url} -> {code}"

    async def _tcp_probe(self, port: int) -> tuple[bool, str]:
        target = f"{LOOPBACK}:{port}"
        try:
            async with asyncio.timeout(self._probe_timeout):
                _, writer = await asyncio.open_connection(LOOPBACK, port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except TimeoutError:
            return False, f"readiness probe failed: TCP connect {target} -> no answer within {self._probe_timeout:g}s"
        except ConnectionRefusedError:
            return False, f"readiness probe failed: TCP connect {target} -> connection refused"
        except OSError as exc:
            return False, f"readiness probe failed: TCP connect {target} -> {exc.strerror or exc}"
        return True, ""

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
