"""A run's message tells "the metric said no" (Failed) from "the source could not answer" (Error).

Failed: the query answered and the condition judged the value — `Metric "m" assessed Failed
due to failed (n) > failureLimit (l)`. Error: the measurement could not be taken — `Metric "m"
assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): "Error Message: …"`,
where the error names the Prometheus address and the query (or the web URL), so the reader
knows which source to fix. Real Prometheus servers (the session's, and one stopped on
purpose); a fake clock jumps to each next measurement (Error retries come every 10 s).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollouts.analysis.providers import MetricProvider, PrometheusProvider, WebProvider
from rollouts.analysis.runner import reconcile_run
from rollouts.model.analysis import COMPLETED_PHASES, AnalysisRun, AnalysisRunStatus
from tests.analysis.conftest import SUCCESS_RATE
from tests.support.prometheus import PrometheusServer, StubHTTPServer, unused_port

pytestmark = pytest.mark.integration

CONSECUTIVE_ERRORS = 'assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): "Error Message: '


class Clock:
    """Starts 10 minutes ago, inside the preloaded history (which ends when the session started)."""

    def __init__(self) -> None:
        self.now = datetime.fromtimestamp(time.time(), UTC) - timedelta(minutes=10)

    def __call__(self) -> datetime:
        return self.now


async def drive(run: AnalysisRun, providers: Mapping[str, MetricProvider], clock: Clock) -> AnalysisRunStatus:
    """Reconcile until the run completes, jumping the clock to each next due measurement."""
    for _ in range(50):
        outcome = await reconcile_run(run, providers=providers, now=clock)
        run = outcome.run
        assert run.status is not None
        if run.status.phase in COMPLETED_PHASES:
            return run.status
        assert outcome.next_at is not None, f"run stuck in {run.status.phase}"
        clock.now = max(clock.now, outcome.next_at)
    raise AssertionError(f"run did not complete: {run.status}")


def make_run(*metrics: dict[str, Any]) -> AnalysisRun:
    return AnalysisRun.model_validate(
        {"metadata": {"name": "checkout-7d9f-3-1", "namespace": "default"}, "spec": {"metrics": list(metrics)}}
    )


def prometheus_metric(address: str, query: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": "success-rate",
        "successCondition": "result[0] >= 0.95",
        "provider": {"prometheus": {"address": address, "query": query}},
        **fields,
    }


@pytest.fixture
async def providers() -> AsyncIterator[dict[str, MetricProvider]]:
    prometheus, web = PrometheusProvider(), WebProvider()
    try:
        yield {"prometheus": prometheus, "web": web}
    finally:
        await prometheus.aclose()
        await web.aclose()


async def test_failed_metric_says_the_metric_said_no(
    prometheus: PrometheusServer, providers: dict[str, MetricProvider]
) -> None:
    query = f'{SUCCESS_RATE}{{service="bad"}}'  # 0.5
    run = make_run(prometheus_metric(prometheus.url, query, interval="30s", count=3, failureLimit=1))
    status = await drive(run, providers, Clock())
    assert status.phase == "Failed"
    assert status.message == 'Metric "success-rate" assessed Failed due to failed (2) > failureLimit (1)'
    assert status.metric_results is not None
    assert [m.value for m in status.metric_results[0].measurements or []] == ["[0.5]", "[0.5]"]


async def test_stopped_prometheus_names_address_and_query(
    fresh_prometheus: PrometheusServer, providers: dict[str, MetricProvider]
) -> None:
    address = fresh_prometheus.url
    fresh_prometheus.stop()
    query = 'sum(rate(rollouts_proxy_requests_total{service="checkout"}[1m]))'
    status = await drive(make_run(prometheus_metric(address, query)), providers, Clock())
    assert status.phase == "Error"
    assert status.message is not None
    assert status.message.startswith(f'Metric "success-rate" {CONSECUTIVE_ERRORS}prometheus at {address} is ')
    assert "unreachable: connection refused" in status.message
    assert f"(query: {query})" in status.message


async def test_rejected_query_names_the_query(
    prometheus: PrometheusServer, providers: dict[str, MetricProvider]
) -> None:
    query = "sum(rate(rollouts_proxy_requests_total[1m]"
    status = await drive(make_run(prometheus_metric(prometheus.url, query)), providers, Clock())
    assert status.phase == "Error"
    assert status.message is not None
    assert f"{CONSECUTIVE_ERRORS}prometheus at {prometheus.url} rejected the query (bad_data)" in status.message
    assert query in status.message


async def test_prometheus_answering_non_2xx_names_address_and_query(
    stub_server: StubHTTPServer, providers: dict[str, MetricProvider]
) -> None:
    stub_server.respond(503, "maintenance")
    status = await drive(make_run(prometheus_metric(stub_server.url, "up")), providers, Clock())
    assert status.phase == "Error"
    assert status.message is not None
    assert f"prometheus at {stub_server.url} answered HTTP 503 (expected 2xx): maintenance" in status.message
    assert status.message.endswith('(query: up)"')


async def test_unreachable_web_metric_names_the_url(providers: dict[str, MetricProvider]) -> None:
    url = f"http://127.0.0.1:{unused_port()}/quality"
    metric = {"name": "quality", "successCondition": "result > 0.7", "provider": {"web": {"url": url}}}
    status = await drive(make_run(metric), providers, Clock())
    assert status.phase == "Error"
    assert status.message is not None
    assert status.message.startswith(f'Metric "quality" {CONSECUTIVE_ERRORS}web metric at {url} is unreachable')


async def test_empty_result_is_an_error_not_a_failure(
    prometheus: PrometheusServer, providers: dict[str, MetricProvider]
) -> None:
    """No data is "could not answer" too: an Error (the condition cannot be evaluated), never Failed."""
    query = 'rollouts_test_no_such_series{service="checkout"}'
    status = await drive(make_run(prometheus_metric(prometheus.url, query)), providers, Clock())
    assert status.phase == "Error"
    assert status.message is not None
    assert CONSECUTIVE_ERRORS in status.message
    assert "nil or empty" in status.message
    assert status.metric_results is not None
    assert (status.metric_results[0].metadata or {}).get("ResolvedPrometheusQuery") == query
