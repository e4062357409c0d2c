"""The `job` metric provider on Kubernetes: each measurement is a batch/v1 Job.

As in Argo Rollouts, `provider.job` is `{metadata, spec}` with `spec` a JobSpec. A
measurement creates a Job from it and waits for the Job's verdict:

* condition `Complete` is **Successful**, condition `Failed` (back-off limit reached,
  `activeDeadlineSeconds` passed, …) is **Failed**, with the condition's reason and message;
* a pod whose container cannot be started because of its image (`ErrImagePull`,
  `ImagePullBackOff`, `InvalidImageName`) is **Inconclusive**: the Job is deleted (it would
  retry forever) and the run decides, as for a bad image in Argo;
* the wait is bounded: by `activeDeadlineSeconds` plus a margin for the Job controller to
  report it, or by the provider's `timeout` when the spec sets no deadline; past it, the Job is
  deleted and the measurement is Failed;
* a spec that is not a Job spec, or a Job the API server refuses, is a `ProviderError` (an
  Error measurement); so is a Job deleted by someone else before it finished.

The value is the exit code of the Job's last terminated container when its pods show one.

Naming and ownership. The provider protocol hands a provider only the `provider.job` block,
so the run's identity comes from an optional `context` mapping (`namespace`, `run_name`,
`run_uid`, `metric`) or, failing that, from the Job's own metadata: labels
`analysisrun.argoproj.io/uid` and `analysisrun.argoproj.io/metric-name` and
`metadata.namespace`. The Job is named `<uid prefix>.<metric>.<n>` (as Argo names them;
DNS-safe, at most 63 characters, the next `n` on a name clash) and labelled with the run's
uid. With the run's name and uid the Job gets an ownerReference to the AnalysisRun, so it is
garbage-collected with the run; without them it has no owner, and `ttlSecondsAfterFinished`
(default one hour, unless the spec sets one) removes it after it finishes.

A measurement holds the reconcile until the Job ends, like the embedded `job` provider. If the
measurement is cancelled (the controller stops), the Job is left running: it belongs to the
cluster, not to this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rollouts.analysis.providers.base import ProviderError, ProviderResult
from rollouts.model.analysis import PHASE_FAILED, PHASE_INCONCLUSIVE, PHASE_SUCCESSFUL
from rollouts.platform.kubernetes import resources
from rollouts.platform.kubernetes.api import KubeApi
from rollouts.store.errors import AlreadyExistsError, StoreError

__all__ = [
    "DEADLINE_MARGIN_SECONDS",
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFAULT_TTL_SECONDS",
    "IMAGE_ERRORS",
    "JOB_NAMESPACE_KEY",
    "JOB_NAME_KEY",
    "METRIC_LABEL",
    "RUN_UID_LABEL",
    "KubeJobProvider",
    "job_name",
]

Obj = dict[str, Any]

RUN_UID_LABEL = "analysisrun.argoproj.io/uid"
METRIC_LABEL = "analysisrun.argoproj.io/metric-name"
JOB_NAME_KEY = "job-name"
JOB_NAMESPACE_KEY = "job-namespace"
IMAGE_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
DEFAULT_TIMEOUT_SECONDS = 600.0
DEADLINE_MARGIN_SECONDS = 30.0
DEFAULT_TTL_SECONDS = 3600
_MAX_NAME = 63
_INVALID = re.compile(r"[^a-z0-9.-]+")


def _dns_part(text: str) -> str:
    return _INVALID.sub("-", text.lower()).strip("-.")


def job_name(prefix: str, metric: str, n: int) -> str:
    """`<prefix>.<metric>.<n>`, DNS-safe and at most 63 characters (the metric part is shortened)."""
    head = _dns_part(prefix)[:16] or "job"
    tail = f".{n}"
    room = _MAX_NAME - len(head) - len(tail) - 1
    middle = _dns_part(metric)[: max(room, 0)].strip("-.") or "metric"
    name = f"{head}.{middle}{tail}"
    return name[:_MAX_NAME]


def _condition(job: Obj, kind: str) -> Obj | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _statuses(pod: Obj) -> list[Obj]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


class KubeJobProvider:
    """`provider.job` as a batch/v1 Job on the cluster `api` talks to."""

    kind = "job"

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str = "default",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        poll_interval: float = 1.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._counters: dict[tuple[str, str], int] = {}

    async def aclose(self) -> None:
        """Nothing to release: the API client belongs to the host."""

    # --- the Job ---------------------------------------------------------------------------------

    def _body(self, spec: dict[str, Any], context: Mapping[str, str]) -> tuple[Obj, str, str]:
        job_spec = spec.get("spec")
        if not isinstance(job_spec, dict) or not isinstance(job_spec.get("template"), dict):
            raise ProviderError("provider.job.spec must be a batch/v1 JobSpec with a pod template (spec.template)")
        deadline = job_spec.get("activeDeadlineSeconds")
        if deadline is not None and (not isinstance(deadline, int) or isinstance(deadline, bool) or deadline <= 0):
            raise ProviderError(f"provider.job.spec.activeDeadlineSeconds must be a positive integer, got {deadline!r}")
        meta_in = spec.get("metadata")
        meta_in = {} if meta_in is None else meta_in
        if not isinstance(meta_in, dict) or not all(
            isinstance(meta_in.get(key) or {}, dict) for key in ("labels", "annotations")
        ):
            raise ProviderError("provider.job.metadata must be an object (labels, annotations: string maps)")
        labels = {str(k): str(v) for k, v in (meta_in.get("labels") or {}).items()}
        uid = context.get("run_uid") or labels.get(RUN_UID_LABEL) or ""
        metric = context.get("metric") or labels.get(METRIC_LABEL) or "job"
        namespace = context.get("namespace") or str(meta_in.get("namespace") or self.namespace)
        if uid:
            labels[RUN_UID_LABEL] = uid
        metadata: Obj = {"namespace": namespace, "labels": labels}
        if meta_in.get("annotations"):
            metadata["annotations"] = {str(k): str(v) for k, v in meta_in["annotations"].items()}
        body_spec = copy.deepcopy(job_spec)
        if uid and context.get("run_name"):
            metadata["ownerReferences"] = [
                {
                    "apiVersion": resources.ANALYSIS_RUN.api_version,
                    "kind": resources.ANALYSIS_RUN.kind,
                    "name": context["run_name"],
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        else:
            body_spec.setdefault("ttlSecondsAfterFinished", DEFAULT_TTL_SECONDS)
        body: Obj = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": body_spec}
        return body, uid or secrets.token_hex(4), metric

    async def _create(self, body: Obj, prefix: str, metric: str) -> Obj:
        key = (prefix, metric)
        for _ in range(100):
            n = self._counters.get(key, 0) + 1
            self._counters[key] = n
            body["metadata"]["name"] = job_name(prefix, metric, n)
            try:
                return await self.api.create(resources.JOB, body)
            except AlreadyExistsError:
                continue  # a Job of an earlier controller process: take the next number
            except StoreError as exc:
                raise ProviderError(f"cannot create the Job for metric {metric!r}: {exc}") from exc
        raise ProviderError(f"cannot find a free Job name for metric {metric!r} (prefix {prefix})")

    async def _pods(self, name: str, namespace: str) -> list[Obj]:
        try:
            pods, _ = await self.api.list(resources.POD, namespace, f"job-name={name}")
        except StoreError:
            return []  # the verdict comes from the Job; pods only refine it
        return pods

    async def _delete(self, name: str, namespace: str) -> None:
        # Best effort: ttlSecondsAfterFinished or the owner's deletion cleans up what is left.
        with contextlib.suppress(StoreError):
            await self.api.delete(resources.JOB, name, namespace)

    # --- a measurement -----------------------------------------------------------------------------

    async def measure(
        self, spec: dict[str, Any], *, now: datetime, context: Mapping[str, str] | None = None
    ) -> ProviderResult:
        body, prefix, metric = self._body(spec, context or {})
        job = await self._create(body, prefix, metric)
        name, namespace = str(job["metadata"]["name"]), str(job["metadata"].get("namespace", self.namespace))
        meta = {JOB_NAME_KEY: name, JOB_NAMESPACE_KEY: namespace}
        active_deadline = body["spec"].get("activeDeadlineSeconds")
        limit = float(active_deadline) + DEADLINE_MARGIN_SECONDS if active_deadline else self.timeout
        deadline = time.monotonic() + limit
        while True:
            try:
                current = await self.api.get(resources.JOB, name, namespace)
            except StoreError as exc:
                if time.monotonic() >= deadline:
                    raise ProviderError(f"job {namespace}/{name}: cannot read its status: {exc}") from exc
                current = job  # a transient API error: look again later
            if current is None:
                raise ProviderError(f"job {namespace}/{name} was deleted before it finished")
            done = _condition(current, "Complete")
            failed = _condition(current, "Failed")
            if done is not None or failed is not None:
                code = self._exit_code(await self._pods(name, namespace))
                text = "" if code is None else str(code)
                if done is not None:
                    return ProviderResult(code, text, meta, PHASE_SUCCESSFUL, f"job {name} completed")
                assert failed is not None
                reason = failed.get("reason") or "Failed"
                detail = f": {failed['message']}" if failed.get("message") else ""
                return ProviderResult(code, text, meta, PHASE_FAILED, f"job {name} failed ({reason}){detail}")
            image_error = self._image_error(await self._pods(name, namespace))
            if image_error is not None:
                await self._delete(name, namespace)
                return ProviderResult(None, "", meta, PHASE_INCONCLUSIVE, f"job {name}: {image_error}")
            if time.monotonic() >= deadline:
                await self._delete(name, namespace)
                return ProviderResult(
                    None, "", meta, PHASE_FAILED, f"job {name} did not finish within {limit:g}s: deleted"
                )
            await asyncio.sleep(self.poll_interval)

    @staticmethod
    def _image_error(pods: list[Obj]) -> str | None:
        for pod in pods:
            for status in _statuses(pod):
                waiting = (status.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in IMAGE_ERRORS:
                    message = f" ({waiting['message']})" if waiting.get("message") else ""
                    return f"container {status.get('name', '?')} cannot start: {waiting['reason']}{message}"
        return None

    @staticmethod
    def _exit_code(pods: list[Obj]) -> int | None:
        """The exit code of the most recently finished container of the Job's pods."""
        best: tuple[str, int] | None = None
        for pod in pods:
            for status in _statuses(pod):
                terminated = (status.get("state") or {}).get("terminated") or {}
                if "exitCode" in terminated:
                    key = (str(terminated.get("finishedAt") or ""), int(terminated["exitCode"]))
                    if best is None or key[0] >= best[0]:
                        best = key
        return None if best is None else best[1]
