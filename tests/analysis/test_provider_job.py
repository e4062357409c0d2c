"""The `job` provider on the embedded platform: a Job's first container as a local process group.

Exit 0 is Successful, a non-zero exit Failed (after `backoffLimit` retries), a container that
cannot start Inconclusive, `activeDeadlineSeconds` kills the whole process group (nothing
left behind), and the environment is the small one documented. Also the runner's side of
the contract: a provider-decided phase skips the conditions.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollouts.analysis.providers import JobProvider, ProviderError, ProviderResult, default_providers
from rollouts.analysis.providers.job import JOB_NAME_KEY, OUTPUT_TAIL_BYTES
from rollouts.analysis.runner import reconcile_run
from rollouts.model.analysis import AnalysisRun

T0 = datetime(2026, 11, 26, 5, 0, 0, tzinfo=UTC)


def job(command: list[str] | None, *, env: dict[str, str] | None = None, **job_spec: Any) -> dict[str, Any]:
    """A `provider.job` block with one container running `command`."""
    container: dict[str, Any] = {"name": "check", "image": "ghcr.io/acme/smoke:v2"}
    if command is not None:
        container["command"] = command
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "metadata": {"labels": {"purpose": "test"}},
        "spec": {
            "backoffLimit": 0,
            **job_spec,
            "template": {"spec": {"containers": [container], "restartPolicy": "Never"}},
        },
    }


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def process_gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return True
    return raw[raw.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


def wait_gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
async def provider() -> AsyncIterator[JobProvider]:
    jobs = JobProvider(retry_backoff_seconds=0.05, retry_backoff_cap_seconds=0.1, default_grace_seconds=1.0)
    try:
        yield jobs
    finally:
        await jobs.aclose()


async def test_exit_zero_is_successful(provider: JobProvider) -> None:
    result = await provider.measure(job(sh("echo all good")), now=T0)
    assert (result.phase, result.value, result.text) == ("Successful", 0, "0")
    assert result.message is not None
    assert "exited with code 0" in result.message
    assert result.message.endswith("output:\nall good")
    assert result.metadata[JOB_NAME_KEY].startswith("analysis-job-")


async def test_non_zero_exit_is_failed_not_error(provider: JobProvider) -> None:
    result = await provider.measure(job(sh("echo 'smoke test: 2 of 5 checks failed' >&2; exit 3")), now=T0)
    assert (result.phase, result.value, result.text) == ("Failed", 3, "3")
    assert result.message is not None
    assert "container check exited with code 3 after 1 attempt (backoffLimit 0)" in result.message
    assert result.message.endswith("smoke test: 2 of 5 checks failed")  # stderr is in the output


async def test_backoff_limit_retries_until_success(provider: JobProvider, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    script = f'echo x >> {counter}; [ "$(wc -l < {counter})" -ge 3 ]'
    result = await provider.measure(job(sh(script), backoffLimit=2), now=T0)
    assert result.phase == "Successful"
    assert result.message is not None and "on attempt 3" in result.message
    assert len(counter.read_text().splitlines()) == 3


async def test_backoff_limit_used_up_is_failed(provider: JobProvider, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    result = await provider.measure(job(sh(f"echo x >> {counter}; exit 1"), backoffLimit=2), now=T0)
    assert result.phase == "Failed"
    assert result.message is not None and "after 3 attempts (backoffLimit 2)" in result.message
    assert len(counter.read_text().splitlines()) == 3


async def test_retries_cut_short_by_the_deadline(tmp_path: Path) -> None:
    jobs = JobProvider(retry_backoff_seconds=5.0)
    counter = tmp_path / "attempts"
    started = time.monotonic()
    result = await jobs.measure(job(sh(f"echo x >> {counter}; exit 4"), backoffLimit=6, activeDeadlineSeconds=2))
    assert time.monotonic() - started < 1.5  # the verdict comes when the next retry cannot make it
    assert (result.phase, result.text) == ("Failed", "4")
    assert result.message is not None
    assert "activeDeadlineSeconds (2s) exceeded after 1 attempt" in result.message
    assert "the last one exited with code 4" in result.message
    assert len(counter.read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("container", "reason"),
    [
        pytest.param(
            job(["no-such-smoke-test-binary", "--fast"]),
            "executable 'no-such-smoke-test-binary' not found in PATH",
            id="missing-executable",
        ),
        pytest.param(job(None), "has no command", id="no-command"),
        pytest.param(job(["/no/such/dir/check"]), "cannot run '/no/such/dir/check'", id="missing-path"),
        pytest.param(
            {
                "spec": {
                    "template": {"spec": {"containers": [{"name": "c", "command": ["true"], "workingDir": "/nope"}]}}
                }
            },
            "workingDir '/nope' is not a directory",
            id="missing-working-dir",
        ),
        pytest.param(
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "c",
                                    "command": ["true"],
                                    "env": [
                                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                                    ],
                                }
                            ]
                        }
                    }
                }
            },
            "env TOKEN uses valueFrom",
            id="env-value-from",
        ),
    ],
)
async def test_cannot_start_is_inconclusive(provider: JobProvider, container: dict[str, Any], reason: str) -> None:
    result = await provider.measure(container, now=T0)
    assert result.phase == "Inconclusive"
    assert result.value is None
    assert result.message is not None
    assert "could not start" in result.message and reason in result.message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, r"provider\.job\.spec is missing", id="no-spec"),
        pytest.param(
            {"spec": {"template": {"spec": {"containers": []}}}}, r"containers is missing or empty", id="empty"
        ),
        pytest.param(job(["true"], activeDeadlineSeconds=0), r"activeDeadlineSeconds must be above 0", id="deadline"),
        pytest.param(job(["true"], backoffLimit=-1), r"backoffLimit must be 0 or more", id="backoff"),
        pytest.param(job(["true"], activeDeadlineSeconds="soon"), r"must be a number, got 'soon'", id="deadline-text"),
    ],
)
async def test_not_a_job_spec_is_provider_error(provider: JobProvider, spec: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProviderError, match=expected):
        await provider.measure(spec, now=T0)


async def test_deadline_kills_the_whole_group(provider: JobProvider, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # A background child (its own process, same group) and a foreground one that ignores nothing.
    script = f"sleep 300 & echo $! > {pids}; echo started; sleep 300"
    started = time.monotonic()
    result = await provider.measure(job(sh(script), activeDeadlineSeconds=1), now=T0)
    elapsed = time.monotonic() - started
    assert result.phase == "Failed"
    assert result.message is not None
    assert "activeDeadlineSeconds (1s) exceeded" in result.message
    assert "process group was killed" in result.message
    assert result.message.endswith("output:\nstarted")
    assert 0.9 < elapsed < 5
    child = int(pids.read_text())
    assert wait_gone(child), f"background child {child} outlived the job"


async def test_deadline_escalates_to_sigkill(provider: JobProvider, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"trap '' TERM; sleep 300 & echo $! > {pids}; while true; do sleep 0.05; done"
    spec = job(sh(script), activeDeadlineSeconds=0.5)
    spec["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 0.3
    result = await provider.measure(spec, now=T0)
    assert result.phase == "Failed"
    assert wait_gone(int(pids.read_text()))


async def test_success_leaves_no_background_child(provider: JobProvider, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = await provider.measure(job(sh(f"sleep 300 & echo $! > {pids}; echo done")), now=T0)
    assert result.phase == "Successful"
    assert time.monotonic() - started < 5  # did not wait for the child's output pipe
    assert wait_gone(int(pids.read_text()))


async def test_cancelled_measurement_kills_the_group(provider: JobProvider, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    task = asyncio.create_task(provider.measure(job(sh(f"sleep 300 & echo $! > {pids}; wait")), now=T0))
    deadline = time.monotonic() + 5
    while not pids.exists() or not pids.read_text().strip():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_gone(int(pids.read_text()))


async def test_closing_the_provider_kills_running_jobs(provider: JobProvider, tmp_path: Path) -> None:
    """The controller stopping is no verdict on the job: an Error measurement, not Failed."""
    pids = tmp_path / "pids"
    task = asyncio.create_task(provider.measure(job(sh(f"sleep 300 & echo $! > {pids}; wait")), now=T0))
    deadline = time.monotonic() + 5
    while not pids.exists() or not pids.read_text().strip():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await provider.aclose()
    with pytest.raises(ProviderError, match=r"killed because the job provider was closed"):
        await task
    assert wait_gone(int(pids.read_text()))


async def test_environment(provider: JobProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUTS_TEST_PARENT_ONLY", "leaked")
    monkeypatch.setenv("LANG", "C.UTF-8")
    script = (
        'echo "greeting=$GREETING"; echo "image=$ROLLOUTS_IMAGE"; echo "lang=$LANG"; '
        'echo "parent=${ROLLOUTS_TEST_PARENT_ONLY:-unset}"; echo "path=${PATH:+set}"'
    )
    result = await provider.measure(job(sh(script), env={"GREETING": "hello"}), now=T0)
    assert result.phase == "Successful"
    assert result.message is not None
    output = result.message.split("output:\n", 1)[1].splitlines()
    assert output == ["greeting=hello", "image=ghcr.io/acme/smoke:v2", "lang=C.UTF-8", "parent=unset", "path=set"]


async def test_var_references_are_expanded(provider: JobProvider) -> None:
    spec = job(["echo", "$(TARGET)/healthz", "$$(TARGET)", "$(UNDEFINED)"], env={"TARGET": "http://canary:8080"})
    result = await provider.measure(spec, now=T0)
    assert result.message is not None
    assert result.message.endswith("output:\nhttp://canary:8080/healthz $(TARGET) $(UNDEFINED)")


async def test_output_tail_is_bounded(provider: JobProvider) -> None:
    script = f"{sys.executable} -c \"print('x' * 100000); print('the end')\"; exit 1"
    result = await provider.measure(job(sh(script)), now=T0)
    assert result.message is not None
    output = result.message.split("output:\n", 1)[1]
    assert output.startswith("…") and output.endswith("the end")
    assert len(output.encode()) <= OUTPUT_TAIL_BYTES + len("…".encode())


async def test_registered_in_default_providers() -> None:
    providers = default_providers()
    try:
        assert isinstance(providers["job"], JobProvider)
    finally:
        for one in providers.values():
            close = getattr(one, "aclose", None)
            if close is not None:
                await close()


# -- through the runner ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def job_run(spec: dict[str, Any], **metric: Any) -> AnalysisRun:
    return AnalysisRun.model_validate(
        {
            "metadata": {"name": "smoke-run", "namespace": "default"},
            "spec": {"metrics": [{"name": "smoke", "provider": {"job": spec}, **metric}]},
        }
    )


async def test_runner_failed_job_fails_the_run(provider: JobProvider) -> None:
    # The condition would pass any value: it is not evaluated, the exit code decides.
    run = job_run(job(sh("echo 'checkout returned 500' >&2; exit 2")), successCondition="true")
    outcome = await reconcile_run(run, providers={"job": provider}, now=Clock())
    status = outcome.run.status
    assert status is not None and status.metric_results is not None
    assert status.phase == "Failed"
    measurement = (status.metric_results[0].measurements or [])[0]
    assert (measurement.phase, measurement.value) == ("Failed", "2")
    assert status.message is not None
    assert status.message.startswith('Metric "smoke" assessed Failed due to failed (1) > failureLimit (0): ')
    assert "exited with code 2" in status.message and "checkout returned 500" in status.message
    assert status.metric_results[0].metadata is not None
    assert JOB_NAME_KEY in status.metric_results[0].metadata


async def test_runner_successful_job_ignores_conditions(provider: JobProvider) -> None:
    run = job_run(job(sh("exit 0")), successCondition="false")
    outcome = await reconcile_run(run, providers={"job": provider}, now=Clock())
    assert outcome.run.status is not None
    assert outcome.run.status.phase == "Successful"


async def test_runner_unstartable_job_is_inconclusive(provider: JobProvider) -> None:
    run = job_run(job(["no-such-smoke-test-binary"]))
    outcome = await reconcile_run(run, providers={"job": provider}, now=Clock())
    status = outcome.run.status
    assert status is not None
    assert status.phase == "Inconclusive"
    assert status.message is not None and "not found in PATH" in status.message


class OddPhaseProvider:
    kind = "job"

    async def measure(
        self, spec: dict[str, Any], *, now: datetime, context: Mapping[str, str] | None = None
    ) -> ProviderResult:
        return ProviderResult(value=None, text="", phase="Running")


async def test_runner_rejects_a_phase_that_is_not_completed() -> None:
    clock = Clock()
    run = job_run(job(["true"]))
    outcome = await reconcile_run(run, providers={"job": OddPhaseProvider()}, now=clock)
    status = outcome.run.status
    assert status is not None and status.metric_results is not None
    measurement = (status.metric_results[0].measurements or [])[0]
    assert measurement.phase == "Error"
    assert measurement.message is not None and "returned phase 'Running'" in measurement.message
    assert outcome.next_at == clock.now + timedelta(seconds=10)
