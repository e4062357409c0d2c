"""The `job` metric provider on the embedded platform: a Job's container as a local process.

Argo Rollouts' `provider.job` is `{metadata, spec}` with `spec` a batch/v1 JobSpec; each
measurement creates a Job and its verdict is the Job's: Complete is Successful, Failed is
Failed, and a pod whose image cannot be pulled is Inconclusive. With no cluster, a
measurement here runs the (first) container of `spec.template.spec.containers` as a local
process, the way the embedded pod supervisor runs pods:

* `command + args` (`command[0]` looked up in `PATH`; `$(VAR)` references to the container's
  env expanded and `$$` reduced to `$`, as Kubernetes does), in `workingDir` when set;
* in its own session and process group, so the whole group is killed when the job ends: a
  background child left behind by the command never outlives its measurement;
* with a small environment: the parent's `PATH`, `HOME` and `LANG`, the container's `env`
  values, and `ROLLOUTS_IMAGE` (the container's image string);
* stdin closed, stdout and stderr merged into a temporary file; their last 2 KB go in the
  measurement's message.

Verdicts, decided here (`ProviderResult.phase`, the metric's conditions are not evaluated):

* exit code 0 is **Successful** (value `0`);
* a non-zero exit is a failed attempt; the Job retries like Kubernetes, `backoffLimit` times
  (default 6) with a back-off of 10 s doubling up to 6 min, and is **Failed** (value: the last
  exit code) once the retries are used up;
* `activeDeadlineSeconds` (default 600 here; Kubernetes has none) bounds the whole Job,
  retries included: when it passes, the process group gets SIGTERM, then SIGKILL after
  `terminationGracePeriodSeconds` (default 30), and the measurement is **Failed**;
* a container that cannot start — no `command` (the embedded platform cannot run an image's
  entrypoint), an executable not found or not runnable, a missing `workingDir`, an env value
  taken `valueFrom` a secret or field — is **Inconclusive**, as a bad image is in Argo;
* a spec that is not a Job spec (no containers, a deadline that is not a positive number…)
  is a `ProviderError`, i.e. an Error measurement, as when Kubernetes refuses to create the Job.

A measurement holds the reconcile until its job ends (it does not return a Running
measurement to be resumed), so `spec.terminate` takes effect once the job has finished.
Exit codes follow the shell convention: killed by signal N is 128 + N.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from rollouts import processgroups
from rollouts.analysis.providers.base import ProviderError, ProviderResult
from rollouts.model.analysis import PHASE_FAILED, PHASE_INCONCLUSIVE, PHASE_SUCCESSFUL

__all__ = [
    "DEFAULT_ACTIVE_DEADLINE_SECONDS",
    "DEFAULT_BACKOFF_LIMIT",
    "JOB_NAME_KEY",
    "OUTPUT_TAIL_BYTES",
    "JobProvider",
]

DEFAULT_ACTIVE_DEADLINE_SECONDS = 600.0
DEFAULT_BACKOFF_LIMIT = 6
DEFAULT_TERMINATION_GRACE_SECONDS = 30.0
OUTPUT_TAIL_BYTES = 2048
JOB_NAME_KEY = "job-name"

_INHERITED_ENV = ("PATH", "HOME", "LANG")
_VAR_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_GONE_WAIT_SECONDS = 2.0


class _CannotStart(Exception):
    """The container cannot be started here: an Inconclusive measurement."""


@dataclass(frozen=True)
class _Container:
    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None


@dataclass(frozen=True)
class _JobSpec:
    name: str
    container: _Container
    deadline: float
    backoff_limit: int
    grace: float


@dataclass
class _Attempt:
    returncode: int | None  # None: killed at the deadline
    output: str


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _describe_exit(returncode: int) -> str:
    text = f"exited with code {_exit_code(returncode)}"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            text += f" ({signal.Signals(-returncode).name})"
    return text


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` becomes `$`."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _VAR_REFERENCE.sub(replace, text)


def _number(spec: Mapping[str, Any], key: str, default: float, *, allow_zero: bool) -> float:
    raw = spec.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ProviderError(f"provider.job.spec.{key} must be a number, got {raw!r}") from None
    if isinstance(raw, bool) or math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "above 0"
        raise ProviderError(f"provider.job.spec.{key} must be {least}, got {raw!r}")
    return value


def _strings(value: Any, *, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise ProviderError(f"{field} must be a list of strings, got {value!r}")
    return [str(v) for v in value]


def _tail(output: IO[bytes]) -> str:
    """The last `OUTPUT_TAIL_BYTES` of `output`, `…`-prefixed when cut."""
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - OUTPUT_TAIL_BYTES))
    text = output.read().decode("utf-8", errors="replace").strip()
    return ("…" + text) if size > OUTPUT_TAIL_BYTES and text else text


class JobProvider:
    """`provider.job` on the embedded platform: one local process group per attempt; see the module docstring."""

    kind = "job"

    def __init__(
        self,
        *,
        default_deadline_seconds: float = DEFAULT_ACTIVE_DEADLINE_SECONDS,
        retry_backoff_seconds: float = 10.0,
        retry_backoff_cap_seconds: float = 360.0,
        default_grace_seconds: float = DEFAULT_TERMINATION_GRACE_SECONDS,
    ) -> None:
        """The defaults are Kubernetes' (back-off 10 s doubling to 6 min, grace 30 s) except the
        deadline, which Kubernetes does not set; tests shorten them."""
        self.default_deadline_seconds = default_deadline_seconds
        self.retry_backoff_seconds = retry_backoff_seconds
        self.retry_backoff_cap_seconds = retry_backoff_cap_seconds
        self.default_grace_seconds = default_grace_seconds
        self._groups: set[int] = set()
        self._closed: set[int] = set()

    async def aclose(self) -> None:
        """Kill every job still running; their measurements end in Error (not a verdict on the job)."""
        for pgid in list(self._groups):
            self._closed.add(pgid)
            processgroups.signal_group(pgid, signal.SIGKILL)

    async def measure(
        self, spec: dict[str, Any], *, now: datetime | None = None, context: Mapping[str, str] | None = None
    ) -> ProviderResult:
        name = self._job_name(spec)
        try:
            job = self._parse(spec, name)
        except _CannotStart as exc:
            return self._inconclusive(name, str(exc))
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + job.deadline
        attempts = 0
        last: _Attempt | None = None
        while True:
            attempts += 1
            try:
                last = await self._run_once(job, deadline_at)
            except _CannotStart as exc:
                return self._inconclusive(name, str(exc))
            if last.returncode == 0:
                return self._result(name, PHASE_SUCCESSFUL, 0, f"job {name} completed", job, last, attempts)
            if last.returncode is None:
                return self._deadline_exceeded(job, last, attempts)
            if attempts > job.backoff_limit:
                return self._result(
                    name, PHASE_FAILED, _exit_code(last.returncode), f"job {name} failed", job, last, attempts
                )
            delay = min(self.retry_backoff_seconds * 2 ** (attempts - 1), self.retry_backoff_cap_seconds)
            if deadline_at - loop.time() <= delay:
                # The next attempt could not start before the deadline: the Job fails there, so
                # the verdict is known now.
                return self._deadline_exceeded(job, last, attempts)
            await asyncio.sleep(delay)

    # -- the spec ----------------------------------------------------------------------------------------

    @staticmethod
    def _job_name(spec: Mapping[str, Any]) -> str:
        metadata = spec.get("metadata")
        prefix = "analysis-job-"
        if isinstance(metadata, Mapping):
            if isinstance(metadata.get("name"), str) and metadata["name"]:
                prefix = f"{metadata['name']}-"
            elif isinstance(metadata.get("generateName"), str) and metadata["generateName"]:
                prefix = metadata["generateName"]
        return f"{prefix}{secrets.token_hex(3)}"

    def _parse(self, spec: Mapping[str, Any], name: str) -> _JobSpec:
        job_spec = spec.get("spec")
        if not isinstance(job_spec, Mapping):
            raise ProviderError(
                "provider.job.spec is missing — set the Job spec to run (spec.template.spec.containers[0].command)"
            )
        template = job_spec.get("template")
        pod_spec = template.get("spec") if isinstance(template, Mapping) else None
        containers = pod_spec.get("containers") if isinstance(pod_spec, Mapping) else None
        if not isinstance(pod_spec, Mapping) or not isinstance(containers, list) or not containers:
            raise ProviderError(
                "provider.job.spec.template.spec.containers is missing or empty — add the container to run"
            )
        first = containers[0]
        if not isinstance(first, Mapping):
            raise ProviderError(f"provider.job.spec.template.spec.containers[0] must be an object, got {first!r}")
        deadline = _number(job_spec, "activeDeadlineSeconds", self.default_deadline_seconds, allow_zero=False)
        backoff = _number(job_spec, "backoffLimit", DEFAULT_BACKOFF_LIMIT, allow_zero=True)
        grace = _number(pod_spec, "terminationGracePeriodSeconds", self.default_grace_seconds, allow_zero=True)
        return _JobSpec(name, self._container(first), deadline, int(backoff), grace)

    @staticmethod
    def _container(container: Mapping[str, Any]) -> _Container:
        field = "provider.job.spec.template.spec.containers[0]"
        name = str(container.get("name") or "job")
        image = str(container.get("image") or "")
        command = _strings(container.get("command"), field=f"{field}.command")
        args = _strings(container.get("args"), field=f"{field}.args")
        env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
        own: dict[str, str] = {}
        raw_env = container.get("env")
        if raw_env is not None and not isinstance(raw_env, list):
            raise ProviderError(f"{field}.env must be a list of {{name, value}} objects")
        for entry in raw_env or []:
            if not isinstance(entry, Mapping) or not entry.get("name"):
                raise ProviderError(f"{field}.env entry {entry!r} has no name")
            key = str(entry["name"])
            if entry.get("valueFrom") is not None:
                raise _CannotStart(
                    f"container {name}: env {key} uses valueFrom, which the embedded platform cannot resolve"
                    " — give it a value"
                )
            value = entry.get("value")
            own[key] = _expand("" if value is None else str(value), own)
        if container.get("envFrom"):
            raise _CannotStart(
                f"container {name}: envFrom is not supported by the embedded platform — list the values under env"
            )
        env.update(own)
        env["ROLLOUTS_IMAGE"] = image
        if not command:
            raise _CannotStart(
                f"container {name} (image {image or '<none>'}) has no command: the embedded platform runs the"
                " container's command as a local process and cannot run an image's entrypoint — set command"
            )
        argv = [_expand(part, own) for part in (*command, *args)]
        program = argv[0]
        if os.sep not in program:
            found = shutil.which(program, path=env.get("PATH", os.defpath))
            if found is None:
                raise _CannotStart(
                    f"container {name} (image {image or '<none>'}): executable {program!r} not found in PATH"
                )
            argv[0] = found
        cwd = container.get("workingDir")
        if cwd is not None and not os.path.isdir(str(cwd)):
            raise _CannotStart(f"container {name}: workingDir {cwd!r} is not a directory")
        return _Container(name, image, argv, env, None if cwd is None else str(cwd))

    # -- running -----------------------------------------------------------------------------------------

    async def _run_once(self, job: _JobSpec, deadline_at: float) -> _Attempt:
        container = job.container
        # Output goes to an unlinked file rather than a pipe: a background child holding a pipe
        # open would keep the attempt waiting; a file is simply read back once the group is gone.
        with tempfile.TemporaryFile(prefix="rollouts-job-") as output:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *container.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    env=container.env,
                    cwd=container.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise _CannotStart(
                    f"container {container.name} (image {container.image or '<none>'}): cannot run"
                    f" {container.argv[0]!r}: {exc.strerror or exc}"
                ) from None
            pgid = proc.pid
            self._groups.add(pgid)
            loop = asyncio.get_running_loop()
            returncode: int | None
            try:
                try:
                    async with asyncio.timeout_at(deadline_at):
                        returncode = await proc.wait()
                except TimeoutError:
                    returncode = None
                    processgroups.signal_group(pgid, signal.SIGTERM)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(job.grace):
                            await proc.wait()
                # Whatever the command left in its group goes with it (as a container's processes do).
                processgroups.signal_group(pgid, signal.SIGKILL)
                await proc.wait()
                gone_by = loop.time() + _GONE_WAIT_SECONDS
                while processgroups.group_alive(pgid) and loop.time() < gone_by:
                    await asyncio.sleep(0.02)
            except BaseException:
                # Cancelled (the controller is stopping) or a bug: never leave a process behind,
                # and reap it (its transport closes once the exit is seen).
                processgroups.signal_group(pgid, signal.SIGKILL)
                with contextlib.suppress(BaseException):
                    async with asyncio.timeout(_GONE_WAIT_SECONDS):
                        await proc.wait()
                raise
            finally:
                self._groups.discard(pgid)
            if pgid in self._closed:
                self._closed.discard(pgid)
                raise ProviderError(
                    f"job {job.name} was killed because the job provider was closed (controller stopping)"
                )
            return _Attempt(returncode, _tail(output))

    # -- verdicts ----------------------------------------------------------------------------------------

    @staticmethod
    def _with_output(message: str, attempt: _Attempt | None) -> str:
        if attempt is None or not attempt.output:
            return message + "; no output"
        return f"{message}; output:\n{attempt.output}"

    def _result(
        self, name: str, phase: str, code: int, headline: str, job: _JobSpec, attempt: _Attempt, attempts: int
    ) -> ProviderResult:
        assert attempt.returncode is not None
        tries = ""
        if phase == PHASE_FAILED:
            tries = f" after {attempts} attempt{'s' if attempts > 1 else ''} (backoffLimit {job.backoff_limit})"
        elif attempts > 1:
            tries = f" on attempt {attempts}"
        message = f"{headline}: container {job.container.name} {_describe_exit(attempt.returncode)}{tries}"
        return ProviderResult(
            value=code,
            text=str(code),
            metadata={JOB_NAME_KEY: name},
            phase=phase,
            message=self._with_output(message, attempt),
        )

    def _deadline_exceeded(self, job: _JobSpec, attempt: _Attempt, attempts: int) -> ProviderResult:
        message = (
            f"job {job.name} failed: activeDeadlineSeconds ({job.deadline:g}s) exceeded after {attempts}"
            f" attempt{'s' if attempts > 1 else ''}"
        )
        if attempt.returncode is None:
            message += f", container {job.container.name}'s process group was killed"
        else:
            message += f" (the next retry would start after it), the last one {_describe_exit(attempt.returncode)}"
        code = None if attempt.returncode is None else _exit_code(attempt.returncode)
        return ProviderResult(
            value=code,
            text="" if code is None else str(code),
            metadata={JOB_NAME_KEY: job.name},
            phase=PHASE_FAILED,
            message=self._with_output(message, attempt),
        )

    @staticmethod
    def _inconclusive(name: str, reason: str) -> ProviderResult:
        return ProviderResult(
            value=None,
            text="",
            metadata={JOB_NAME_KEY: name},
            phase=PHASE_INCONCLUSIVE,
            message=f"job {name} could not start: {reason}",
        )
