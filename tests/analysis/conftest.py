"""Fixtures for the analysis tests: one real Prometheus per session, loopback HTTP stand-ins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from rollouts.analysis.providers.prometheus import PrometheusProvider
from rollouts.analysis.providers.web import WebProvider
from tests.support.prometheus import (
    BlackholeServer,
    PrometheusNotInstalled,
    PrometheusServer,
    Series,
    StubHTTPServer,
    constant_series,
)

# Series preloaded into the session's Prometheus (names are unique to these tests).
SUCCESS_RATE = "rollouts_test_success_rate"  # {service="good"} 0.99, {service="bad"} 0.5
REQUESTS = "rollouts_test_requests"  # {instance="a"} 10, {instance="b"} 11 — a vector of 2
NAN_SERIES = "rollouts_test_nan"  # NaN
POS_INF_SERIES = "rollouts_test_pos_inf"  # +Inf
RANGE_SERIES = "rollouts_test_range"  # {series="a"} 1, {series="b"} 2 — for range queries


def preloaded_series() -> list[Series]:
    return [
        constant_series(SUCCESS_RATE, 0.99, labels={"service": "good"}),
        constant_series(SUCCESS_RATE, 0.5, labels={"service": "bad"}),
        constant_series(REQUESTS, 10, labels={"instance": "a"}),
        constant_series(REQUESTS, 11, labels={"instance": "b"}),
        constant_series(NAN_SERIES, float("nan")),
        constant_series(POS_INF_SERIES, float("inf")),
        constant_series(RANGE_SERIES, 1, labels={"series": "a"}),
        constant_series(RANGE_SERIES, 2, labels={"series": "b"}),
    ]


def start_prometheus(server: PrometheusServer, *, backfill: list[Series] | None = None) -> PrometheusServer:
    """Start `server` (after backfilling), turning a missing binary into a clear failure."""
    try:
        if backfill:
            server.backfill(backfill)
        return server.start()
    except PrometheusNotInstalled as exc:
        pytest.fail(f"Prometheus is needed for these tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus (one per session) with `preloaded_series()` queryable at once."""
    server = PrometheusServer(workdir=tmp_path_factory.mktemp("prometheus"))
    try:
        yield start_prometheus(server, backfill=preloaded_series())
    finally:
        server.stop()


@pytest.fixture
def fresh_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A second, empty Prometheus for this test only (tests may stop it or add targets)."""
    server = PrometheusServer(workdir=tmp_path_factory.mktemp("prometheus-fresh"))
    try:
        yield start_prometheus(server)
    finally:
        server.stop()


@pytest.fixture
def stub_server() -> Iterator[StubHTTPServer]:
    with StubHTTPServer() as server:
        yield server


@pytest.fixture
def blackhole() -> Iterator[BlackholeServer]:
    with BlackholeServer() as server:
        yield server


@pytest.fixture
async def prometheus_provider() -> AsyncIterator[PrometheusProvider]:
    provider = PrometheusProvider()
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
async def web_provider() -> AsyncIterator[WebProvider]:
    provider = WebProvider()
    try:
        yield provider
    finally:
        await provider.aclose()
