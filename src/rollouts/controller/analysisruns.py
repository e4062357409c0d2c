"""Reconciling one AnalysisRun: take the measurements that are due, write the status once.

The measuring itself (provider calls, conditions, phases) is the analysis engine's; this
module reads the run, hands it to `analysis.runner.reconcile_run`, and stores the result with
the resourceVersion that was read. Completed runs are deleted once their TTL passes.

Events, as Argo's analysis controller records them on the AnalysisRun once its status is
written: `Metric<Phase>` when a metric completes ("Metric 'm' Completed. Result: Failed") and
`AnalysisRun<Phase>` when the run completes ("Analysis Completed. Result: Successful"),
Warning for Failed and Error. And, as Argo's rollout controller records them on the Rollout
that owns the run, `AnalysisRun<Phase>` on every phase change ("Step Analysis Run 'r' Status
New: 'Running' Previous: 'NoPreviousStatus'"). Events are best effort: one that cannot be
written is logged, the run goes on.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from rollouts.analysis.providers.base import MetricProvider
from rollouts.analysis.runner import reconcile_run, ttl_expired
from rollouts.model.analysis import AnalysisRun
from rollouts.store.protocol import ResourceStore

log = logging.getLogger(__name__)

COMPLETED = frozenset({"Successful", "Failed", "Error", "Inconclusive"})
_WARNING = frozenset({"Failed", "Error"})
_ROLLOUT_LABEL = "rollout"
_RUN_TYPE_LABEL = "rollout-type"


def _event_type(phase: str) -> str:
    return "Warning" if phase in _WARNING else "Normal"


def _metric_phases(status: Mapping[str, Any] | None) -> dict[str, str]:
    return {
        str(result.get("name")): str(result.get("phase") or "")
        for result in (status or {}).get("metricResults") or []
        if isinstance(result, dict)
    }


def transition_events(
    raw: Mapping[str, Any], old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> list[tuple[str, str, str, str, str]]:
    """The events of a status change from `old` to `new`: (kind, name, type, reason, message),
    in Argo's order (metrics, then the run, then the owning Rollout)."""
    meta = raw.get("metadata") or {}
    name = str(meta.get("name", ""))
    events: list[tuple[str, str, str, str, str]] = []
    before = _metric_phases(old)
    for metric, phase in _metric_phases(new).items():
        if phase in COMPLETED and before.get(metric) != phase:
            message = f"Metric '{metric}' Completed. Result: {phase}"
            events.append(("AnalysisRun", name, _event_type(phase), f"Metric{phase}", message))
    old_phase = str((old or {}).get("phase") or "")
    new_phase = str((new or {}).get("phase") or "")
    if not new_phase or new_phase == old_phase:
        return events
    if new_phase in COMPLETED:
        message = f"Analysis Completed. Result: {new_phase}"
        events.append(("AnalysisRun", name, _event_type(new_phase), f"AnalysisRun{new_phase}", message))
    labels = meta.get("labels") or {}
    rollout = labels.get(_ROLLOUT_LABEL)
    owned = any(
        ref.get("kind") == "Rollout" and ref.get("name") == rollout for ref in meta.get("ownerReferences") or []
    )
    if rollout and owned:
        kind = labels.get(_RUN_TYPE_LABEL) or "Step"
        message = (
            f"{kind} Analysis Run '{name}' Status New: '{new_phase}' Previous: '{old_phase or 'NoPreviousStatus'}'"
        )
        events.append(("Rollout", str(rollout), _event_type(new_phase), f"AnalysisRun{new_phase}", message))
    return events


class AnalysisRunReconciler:
    def __init__(
        self, store: ResourceStore, providers: Mapping[str, MetricProvider], clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.providers = providers
        self.clock = clock

    def secret(self, namespace: str, name: str, key: str) -> str | None:
        raw = self.store.get("Secret", name, namespace)
        if raw is None:
            return None
        if key in (raw.get("stringData") or {}):
            return str(raw["stringData"][key])
        encoded = (raw.get("data") or {}).get(key)
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Returns seconds until the run needs another look (None: only on change)."""
        raw = self.store.get("AnalysisRun", name, namespace)
        if raw is None:
            return None
        try:
            run = AnalysisRun.model_validate(raw)
        except ValidationError as exc:
            status = {"phase": "Error", "message": f"Analysis spec invalid: {exc.errors()[0]['msg']}"}
            if raw.get("status") != status:
                old = raw.get("status")
                raw["status"] = status
                await self.store.update_status(raw)
                await self._record(namespace, raw, old, status)
            return None
        if ttl_expired(run, self.clock()):
            await self.store.delete("AnalysisRun", name, namespace)
            return None
        outcome = await reconcile_run(run, providers=self.providers, now=self.clock, secrets=self.secret)
        if outcome.changed:
            new_status = outcome.run.to_json().get("status")
            if new_status != raw.get("status"):
                old = raw.get("status")
                raw["status"] = new_status
                await self.store.update_status(raw)
                await self._record(namespace, raw, old, new_status)
        if outcome.next_at is None:
            return None
        return max(0.0, (outcome.next_at - self.clock()).total_seconds())

    async def _record(
        self, namespace: str, raw: Mapping[str, Any], old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        """The events of a status just written (after the write: a conflict records nothing,
        and the reconcile that follows records them once)."""
        for kind, name, type_, reason, message in transition_events(raw, old, new):
            try:
                await self.store.record_event(kind, name, namespace, type_, reason, message)
            except Exception as exc:  # an event is best effort: the run's status is what counts
                log.warning("%s %s/%s: event %s not recorded: %s", kind, namespace, name, reason, exc)
