"""The `job` metric provider on Kubernetes, against the API stand-in.

A test-side "job controller" task plays the Job controller and kubelet: it finds the Jobs the
provider created and writes their status (Complete / Failed conditions) or their Pods'
container states through the stand-in's store, as the real controllers would.
"""

# ruff: noqa: F811
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rollouts.analysis.providers.base import ProviderError
from rollouts.platform.kubernetes.api import KubeApi, load_api_client
from rollouts.platform.kubernetes.job_provider import (
    DEFAULT_TTL_SECONDS,
    JOB_NAME_KEY,
    RUN_UID_LABEL,
    KubeJobProvider,
    job_name,
)
from tests.support.kubeapi.fixtures import kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
UID = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc"
CONTEXT = {"namespace": "default", "run_name": "web-run", "run_uid": UID, "metric": "smoke-test"}


def job_spec(**spec: Any) -> Obj:
    return {
        "metadata": {"labels": {"team": "qa"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "check", "image": "busybox", "command": ["true"]}],
                }
            },
            **spec,
        },
    }


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[KubeApi]:
    client = KubeApi(await load_api_client(str(kubeconfig)))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def provider(api: KubeApi) -> KubeJobProvider:
    return KubeJobProvider(api, poll_interval=0.02, timeout=10)


@contextlib.asynccontextmanager
async def job_controller(kube_api: KubeAPIServer, act: Callable[[Obj], None]) -> AsyncIterator[list[Obj]]:
    """Calls `act(job)` once for every new Job (in any namespace); yields the Jobs seen."""
    seen: list[Obj] = []

    async def loop() -> None:
        done: set[str] = set()
        while True:
            for job in kube_api.store.list("jobs"):
                if job["metadata"]["uid"] not in done:
                    done.add(job["metadata"]["uid"])
                    seen.append(job)
                    act(job)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(loop())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def finish(kube_api: KubeAPIServer, condition: str, reason: str = "", message: str = "") -> Callable[[Obj], None]:
    def act(job: Obj) -> None:
        meta = job["metadata"]
        cond = {"type": condition, "status": "True", "reason": reason, "message": message}
        kube_api.store.patch_status("jobs", meta["namespace"], meta["name"], {"conditions": [cond]})

    return act


def pod_for(kube_api: KubeAPIServer, job: Obj, state: Obj) -> None:
    meta = job["metadata"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{meta['name']}-abcde", "labels": {"job-name": meta["name"]}},
        "spec": job["spec"]["template"]["spec"],
    }
    kube_api.store.create("pods", pod, meta["namespace"])
    kube_api.store.put_status(
        "pods", meta["namespace"], pod["metadata"]["name"], {"containerStatuses": [{"name": "check", "state": state}]}
    )


async def test_complete_is_successful_with_owner_and_labels(kube_api: KubeAPIServer, provider: KubeJobProvider) -> None:
    def act(job: Obj) -> None:
        pod_for(kube_api, job, {"terminated": {"exitCode": 0, "finishedAt": "2026-01-01T00:00:01Z"}})
        finish(kube_api, "Complete")(job)

    async with job_controller(kube_api, act) as seen:
        result = await provider.measure(job_spec(), now=NOW, context=CONTEXT)
    assert result.phase == "Successful"
    assert (result.value, result.text) == (0, "0")
    name = result.metadata[JOB_NAME_KEY]
    assert name == f"{UID[:16]}.smoke-test.1"
    job = kube_api.store.get("jobs", "default", name)
    assert job is not None and [j["metadata"]["name"] for j in seen] == [name]
    assert job["metadata"]["labels"] == {"team": "qa", RUN_UID_LABEL: UID}
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("AnalysisRun", "web-run", UID, True)
    assert "ttlSecondsAfterFinished" not in job["spec"]
    # The next measurement of the same metric gets the next name.
    async with job_controller(kube_api, finish(kube_api, "Complete")):
        again = await provider.measure(job_spec(), now=NOW, context=CONTEXT)
    assert again.metadata[JOB_NAME_KEY] == f"{UID[:16]}.smoke-test.2"


async def test_failed_condition_is_failed(kube_api: KubeAPIServer, provider: KubeJobProvider) -> None:
    def act(job: Obj) -> None:
        pod_for(kube_api, job, {"terminated": {"exitCode": 3, "finishedAt": "2026-01-01T00:00:01Z"}})
        finish(kube_api, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")(job)

    async with job_controller(kube_api, act):
        result = await provider.measure(job_spec(), now=NOW, context=CONTEXT)
    assert result.phase == "Failed"
    assert (result.value, result.text) == (3, "3")
    assert result.message is not None
    assert "BackoffLimitExceeded" in result.message and "backoff limit" in result.message


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
async def test_image_errors_are_inconclusive_and_delete_the_job(
    kube_api: KubeAPIServer, provider: KubeJobProvider, reason: str
) -> None:
    def act(job: Obj) -> None:
        pod_for(kube_api, job, {"waiting": {"reason": reason, "message": "no such image"}})

    async with job_controller(kube_api, act):
        result = await provider.measure(job_spec(), now=NOW, context=CONTEXT)
    assert result.phase == "Inconclusive"
    assert result.message is not None and reason in result.message and "no such image" in result.message
    assert kube_api.store.get("jobs", "default", result.metadata[JOB_NAME_KEY]) is None


async def test_without_context_uses_metadata_and_has_no_owner(
    kube_api: KubeAPIServer, provider: KubeJobProvider
) -> None:
    spec = job_spec()
    spec["metadata"]["labels"][RUN_UID_LABEL] = UID
    spec["metadata"]["labels"]["analysisrun.argoproj.io/metric-name"] = "Error_Rate"
    async with job_controller(kube_api, finish(kube_api, "Complete")):
        result = await provider.measure(spec, now=NOW)
    assert result.phase == "Successful"
    assert (result.value, result.text) == (None, "")
    name = result.metadata[JOB_NAME_KEY]
    assert name == f"{UID[:16]}.error-rate.1"
    job = kube_api.store.get("jobs", "default", name)
    assert job is not None
    assert "ownerReferences" not in job["metadata"]
    assert job["spec"]["ttlSecondsAfterFinished"] == DEFAULT_TTL_SECONDS
    async with job_controller(kube_api, finish(kube_api, "Complete")):
        anonymous = await provider.measure(job_spec(), now=NOW)
    assert anonymous.metadata[JOB_NAME_KEY].endswith(".job.1")


async def test_a_name_taken_by_an_earlier_process_moves_on(kube_api: KubeAPIServer, provider: KubeJobProvider) -> None:
    taken = job_name(UID, "smoke-test", 1)
    kube_api.store.create(
        "jobs",
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": taken}, "spec": job_spec()["spec"]},
        "default",
    )
    async with job_controller(
        kube_api, lambda job: None if job["metadata"]["name"] == taken else finish(kube_api, "Complete")(job)
    ):
        result = await provider.measure(job_spec(), now=NOW, context=CONTEXT)
    assert result.metadata[JOB_NAME_KEY] == job_name(UID, "smoke-test", 2)


async def test_no_verdict_in_time_is_failed_and_deleted(kube_api: KubeAPIServer, api: KubeApi) -> None:
    provider = KubeJobProvider(api, poll_interval=0.02, timeout=0.3)
    result = await provider.measure(job_spec(), now=NOW, context=CONTEXT)
    assert result.phase == "Failed"
    assert result.message is not None and "did not finish within 0.3s" in result.message
    assert kube_api.store.list("jobs") == []


async def test_active_deadline_bounds_the_wait(kube_api: KubeAPIServer, provider: KubeJobProvider) -> None:
    # The Job controller reports DeadlineExceeded itself; the provider reads the condition.
    async with job_controller(kube_api, finish(kube_api, "Failed", "DeadlineExceeded", "Job was active longer")):
        result = await provider.measure(job_spec(activeDeadlineSeconds=5), now=NOW, context=CONTEXT)
    assert result.phase == "Failed" and result.message is not None and "DeadlineExceeded" in result.message


async def test_a_deleted_job_is_an_error(kube_api: KubeAPIServer, provider: KubeJobProvider) -> None:
    def act(job: Obj) -> None:
        kube_api.store.delete("jobs", job["metadata"]["namespace"], job["metadata"]["name"])

    async with job_controller(kube_api, act):
        with pytest.raises(ProviderError, match="was deleted before it finished"):
            await provider.measure(job_spec(), now=NOW, context=CONTEXT)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        pytest.param({"spec": {}}, "pod template", id="no-template"),
        pytest.param({}, "pod template", id="no-spec"),
        pytest.param(job_spec(activeDeadlineSeconds="soon"), "positive integer", id="bad-deadline"),
        pytest.param(job_spec(activeDeadlineSeconds=0), "positive integer", id="zero-deadline"),
        pytest.param({"metadata": [], "spec": job_spec()["spec"]}, "metadata must be an object", id="bad-metadata"),
    ],
)
async def test_bad_specs_are_provider_errors(
    kube_api: KubeAPIServer, provider: KubeJobProvider, spec: Obj, match: str
) -> None:
    with pytest.raises(ProviderError, match=match):
        await provider.measure(spec, now=NOW, context=CONTEXT)
    assert kube_api.store.list("jobs") == []


async def test_a_refused_job_is_a_provider_error(kube_api: KubeAPIServer, provider: KubeJobProvider) -> None:
    with pytest.raises(ProviderError, match="cannot create the Job"):
        await provider.measure(job_spec(), now=NOW, context={**CONTEXT, "namespace": "no-such-namespace"})


def test_job_names_are_dns_safe_and_short() -> None:
    name = job_name(UID, "A_Very/Long Metric Name " * 5, 12345)
    assert len(name) <= 63
    assert name.startswith(f"{UID[:16]}.a-very-long-metric-name")
    assert name.endswith(".12345")
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789.-" for c in name)
    assert job_name("", "", 1) == "job.metric.1"
