"""Reconciling one AnalysisRun: take the measurements that are due, write the status once.

The measuring itself (provider calls, conditions, phases) is the analysis engine's; this
module reads the run, hands it to `analysis.runner.reconcile_run`, and stores the result with
the resourceVersion that was read. Completed runs are deleted once their TTL passes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import datetime

from pydantic import ValidationError

from rollouts.analysis.providers.base import MetricProvider
from rollouts.analysis.runner import reconcile_run, ttl_expired
from rollouts.model.analysis import AnalysisRun
from rollouts.store.protocol import ResourceStore


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
                raw["status"] = status
                await self.store.update_status(raw)
            return None
        if ttl_expired(run, self.clock()):
            await self.store.delete("AnalysisRun", name, namespace)
            return None
        outcome = await reconcile_run(run, providers=self.providers, now=self.clock, secrets=self.secret)
        if outcome.changed:
            new_status = outcome.run.to_json().get("status")
            if new_status != raw.get("status"):
                raw["status"] = new_status
                await self.store.update_status(raw)
        if outcome.next_at is None:
            return None
        return max(0.0, (outcome.next_at - self.clock()).total_seconds())
