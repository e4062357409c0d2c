"""Metric providers: where an analysis measurement comes from (`provider.<kind>` in a metric).

`default_providers()` builds the built-in ones, keyed by kind: `prometheus` (PromQL over the
Prometheus HTTP API), `web` (an HTTP endpoint plus a JSONPath into its JSON body) and `job`
(a Job's container run as a local process on the embedded platform). The HTTP providers
share one client across measurements and `job` tracks its running processes: call
`aclose()` on each when done.
Unknown kinds are the engine's business, not this registry's.
"""

from __future__ import annotations

from rollouts.analysis.providers.base import MetricProvider, ProviderError, ProviderResult
from rollouts.analysis.providers.job import JobProvider
from rollouts.analysis.providers.prometheus import PrometheusProvider
from rollouts.analysis.providers.web import WebProvider

__all__ = [
    "JobProvider",
    "MetricProvider",
    "PrometheusProvider",
    "ProviderError",
    "ProviderResult",
    "WebProvider",
    "default_providers",
]


def default_providers(*, prometheus_address: str | None = None) -> dict[str, MetricProvider]:
    """The built-in providers by kind; `prometheus_address` is used when a metric sets no address
    and `$ARGO_ROLLOUTS_PROMETHEUS_ADDRESS` is unset."""
    return {
        PrometheusProvider.kind: PrometheusProvider(address=prometheus_address),
        WebProvider.kind: WebProvider(),
        JobProvider.kind: JobProvider(),
    }
