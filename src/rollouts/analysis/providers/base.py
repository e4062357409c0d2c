"""The contract between the analysis engine and metric providers.

A provider takes a metric's `provider` block (already with `{{args.*}}` substituted) and
returns one result. Anything that goes wrong on the provider's side — unreachable address,
bad status, undecodable body, timeout — is raised as `ProviderError` with a message that
names the source and the fix; the engine records it as an Error measurement. The engine also
catches any other exception from a provider, so a provider bug never kills a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class ProviderError(Exception):
    """A measurement could not be taken; the message names the address/source and the fix."""


@dataclass(frozen=True)
class ProviderResult:
    """What a provider measured.

    `value` is what conditions see as `result` (float, list of floats, dict, str or None);
    `text` is the measurement's `value` string as Argo stores it (`10`, `[10,11]`, `NaN`).
    `metadata` lands in the metric result's metadata (e.g. `ResolvedPrometheusQuery`).

    `phase`: a provider that decides the measurement's phase itself, like `job` (exit code 0 is
    Successful, any other Failed, a container that cannot start Inconclusive), sets it to one
    of the completed phases; the metric's conditions are then not evaluated. `message` is that
    measurement's message (e.g. the job's exit code and output tail); it is only used together
    with `phase`.
    """

    value: Any
    text: str
    metadata: dict[str, str] = field(default_factory=dict)
    phase: str | None = None
    message: str | None = None


class MetricProvider(Protocol):
    """One provider kind (the key under `provider:`, e.g. `prometheus`)."""

    kind: str

    async def measure(
        self, spec: dict[str, Any], *, now: datetime, context: Mapping[str, str] | None = None
    ) -> ProviderResult:
        """Take one measurement; `spec` is the block under `provider.<kind>`.

        `context` names the run being measured (namespace, run_name, run_uid, metric), for
        providers that create objects on its behalf (the Kubernetes job provider).
        """
        ...
