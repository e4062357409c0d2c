"""The prometheus provider against a real Prometheus (and loopback stand-ins for failures)."""

from __future__ import annotations

import base64
import math
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from rollouts.analysis.providers import PrometheusProvider, ProviderError, default_providers
from rollouts.analysis.providers.prometheus import (
    ADDRESS_ENV_VAR,
    RESOLVED_QUERY_KEY,
    format_values,
    parse_go_duration,
)
from rollouts.analysis.providers.web import format_go_float
from tests.analysis.conftest import (
    NAN_SERIES,
    POS_INF_SERIES,
    RANGE_SERIES,
    REQUESTS,
    SUCCESS_RATE,
)
from tests.support.prometheus import (
    PROMETHEUS_BIN_ENV,
    BlackholeServer,
    PrometheusNotInstalled,
    PrometheusServer,
    StubHTTPServer,
    require_binaries,
    unused_port,
)


def now() -> datetime:
    return datetime.now(UTC)


def spec(address: str, query: str, **extra: Any) -> dict[str, Any]:
    return {"address": address, "query": query, **extra}


VECTOR_BODY = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1700000000, "1"]}]},
}


# -- result types against the real Prometheus ---------------------------------------------------------


async def test_scalar(prometheus: PrometheusServer, prometheus_provider: PrometheusProvider) -> None:
    query = f'scalar({SUCCESS_RATE}{{service="good"}})'
    result = await prometheus_provider.measure(spec(prometheus.url, query), now=now())
    assert result.value == pytest.approx(0.99)
    assert isinstance(result.value, float)
    assert result.text == "0.99"
    assert result.metadata == {RESOLVED_QUERY_KEY: query}


async def test_integral_scalar_prints_without_fraction(
    prometheus: PrometheusServer, prometheus_provider: PrometheusProvider
) -> None:
    result = await prometheus_provider.measure(spec(prometheus.url, f"scalar(sum({REQUESTS}))"), now=now())
    assert result.value == 21.0
    assert result.text == "21"


async def test_vector_of_two_series(prometheus: PrometheusServer, prometheus_provider: PrometheusProvider) -> None:
    query = f"sort({REQUESTS})"
    result = await prometheus_provider.measure(spec(prometheus.url, query), now=now())
    assert result.value == [10.0, 11.0]
    assert result.text == "[10,11]"


async def test_passing_and_failing_success_rate(
    prometheus: PrometheusServer, prometheus_provider: PrometheusProvider
) -> None:
    good = await prometheus_provider.measure(spec(prometheus.url, f'{SUCCESS_RATE}{{service="good"}}'), now=now())
    bad = await prometheus_provider.measure(spec(prometheus.url, f'{SUCCESS_RATE}{{service="bad"}}'), now=now())
    assert good.value == [0.99]
    assert good.text == "[0.99]"
    assert bad.value == [0.5]
    assert bad.text == "[0.5]"


async def test_empty_vector(prometheus: PrometheusServer, prometheus_provider: PrometheusProvider) -> None:
    result = await prometheus_provider.measure(spec(prometheus.url, "rollouts_test_no_such_series"), now=now())
    assert result.value == []
    assert result.text == "[]"


async def test_nan(prometheus: PrometheusServer, prometheus_provider: PrometheusProvider) -> None:
    result = await prometheus_provider.measure(spec(prometheus.url, NAN_SERIES), now=now())
    assert len(result.value) == 1
    assert math.isnan(result.value[0])
    assert result.text == "[NaN]"
    scalar = await prometheus_provider.measure(spec(prometheus.url, f"scalar({NAN_SERIES})"), now=now())
    assert math.isnan(scalar.value)
    assert scalar.text == "NaN"


async def test_positive_infinity(prometheus: PrometheusServer, prometheus_provider: PrometheusProvider) -> None:
    result = await prometheus_provider.measure(spec(prometheus.url, POS_INF_SERIES), now=now())
    assert result.value == [math.inf]
    assert result.text == "[+Inf]"
    negative = await prometheus_provider.measure(spec(prometheus.url, f"-scalar({POS_INF_SERIES})"), now=now())
    assert negative.value == -math.inf
    assert negative.text == "-Inf"


async def test_query_with_args_substituted(
    prometheus: PrometheusServer, prometheus_provider: PrometheusProvider
) -> None:
    # What the engine sends after replacing {{args.service-name}} with "good".
    query = f'sum({SUCCESS_RATE}{{service=~"good"}}) / count({SUCCESS_RATE}{{service=~"good"}})'
    result = await prometheus_provider.measure(spec(prometheus.url, query, timeout=5), now=now())
    assert result.value == [pytest.approx(0.99)]
    assert result.metadata[RESOLVED_QUERY_KEY] == query


async def test_range_query_matrix_is_flattened(
    prometheus: PrometheusServer, prometheus_provider: PrometheusProvider
) -> None:
    range_query = {"start": 'now() - duration("10m")', "end": "now()", "step": "1m"}
    result = await prometheus_provider.measure(spec(prometheus.url, RANGE_SERIES, rangeQuery=range_query), now=now())
    # 11 evaluation points (start..end every minute) per series; series sorted by labels.
    assert result.value == [1.0] * 11 + [2.0] * 11
    assert result.text == "[" + ",".join(["1"] * 11 + ["2"] * 11) + "]"
    assert result.metadata[RESOLVED_QUERY_KEY] == RANGE_SERIES
    assert result.metadata[f"{RESOLVED_QUERY_KEY}Step"] == "1m"
    start = datetime.fromisoformat(result.metadata[f"{RESOLVED_QUERY_KEY}Start"])
    end = datetime.fromisoformat(result.metadata[f"{RESOLVED_QUERY_KEY}End"])
    assert (end - start).total_seconds() == pytest.approx(600, abs=1)


# -- the request as sent --------------------------------------------------------------------------------


async def test_headers_and_basic_auth_are_sent(
    stub_server: StubHTTPServer, prometheus_provider: PrometheusProvider
) -> None:
    stub_server.respond(200, VECTOR_BODY)
    measured_at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    result = await prometheus_provider.measure(
        spec(
            stub_server.url + "/prefix/",
            "up == 1",
            headers=[{"key": "X-Scope-OrgID", "value": "tenant-a"}, {"key": "X-Other", "value": "b"}],
            authentication={"basicAuth": {"username": "ann", "password": "s3cret"}},
        ),
        now=measured_at,
    )
    assert result.value == [1.0]
    [request] = stub_server.requests
    assert request.method == "POST"
    assert request.path == "/prefix/api/v1/query"
    assert request.headers["x-scope-orgid"] == "tenant-a"
    assert request.headers["x-other"] == "b"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"ann:s3cret").decode()
    form = parse_qs(request.body.decode())
    assert form == {"query": ["up == 1"], "time": [f"{measured_at.timestamp():.3f}"]}


async def test_bearer_token_is_just_a_header(
    stub_server: StubHTTPServer, prometheus_provider: PrometheusProvider
) -> None:
    stub_server.respond(200, VECTOR_BODY)
    await prometheus_provider.measure(
        spec(stub_server.url, "up", headers=[{"key": "Authorization", "value": "Bearer t0ken"}]), now=now()
    )
    assert stub_server.requests[0].headers["authorization"] == "Bearer t0ken"


async def test_address_from_environment_then_default(
    stub_server: StubHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub_server.respond(200, VECTOR_BODY)
    providers = default_providers(prometheus_address="http://127.0.0.1:9")
    provider = providers["prometheus"]
    assert isinstance(provider, PrometheusProvider)
    try:
        monkeypatch.setenv(ADDRESS_ENV_VAR, stub_server.url)
        assert (await provider.measure({"query": "up"}, now=now())).value == [1.0]
        monkeypatch.delenv(ADDRESS_ENV_VAR)
        assert provider.resolve_address({"query": "up"}) == "http://127.0.0.1:9"
    finally:
        await provider.aclose()
        web = providers["web"]
        assert hasattr(web, "aclose")
        await web.aclose()


async def test_address_missing(monkeypatch: pytest.MonkeyPatch, prometheus_provider: PrometheusProvider) -> None:
    monkeypatch.delenv(ADDRESS_ENV_VAR, raising=False)
    with pytest.raises(ProviderError, match=r"address is not configured.*provider\.prometheus\.address"):
        await prometheus_provider.measure({"query": "up"}, now=now())


async def test_injected_client_is_used_and_not_closed(stub_server: StubHTTPServer) -> None:
    stub_server.respond(200, VECTOR_BODY)
    async with httpx.AsyncClient() as client:
        provider = PrometheusProvider(client=client)
        await provider.measure(spec(stub_server.url, "up"), now=now())
        await provider.aclose()
        assert not client.is_closed
    assert len(stub_server.requests) == 1


# -- failures ---------------------------------------------------------------------------------------------


async def test_unreachable_address(prometheus_provider: PrometheusProvider) -> None:
    address = f"http://127.0.0.1:{unused_port()}"
    with pytest.raises(ProviderError) as caught:
        await prometheus_provider.measure(spec(address, "up"), now=now())
    message = str(caught.value)
    assert message.startswith(f"prometheus at {address} is unreachable: connection refused")
    assert "provider.prometheus.address" in message
    assert "start Prometheus" in message


async def test_bad_query_quotes_prometheus_error(
    prometheus: PrometheusServer, prometheus_provider: PrometheusProvider
) -> None:
    with pytest.raises(ProviderError) as caught:
        await prometheus_provider.measure(spec(prometheus.url, "sum(("), now=now())
    message = str(caught.value)
    assert f"prometheus at {prometheus.url} rejected the query (bad_data)" in message
    assert "parse error" in message
    assert "sum((" in message


async def test_timeout(blackhole: BlackholeServer, prometheus_provider: PrometheusProvider) -> None:
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await prometheus_provider.measure(spec(blackhole.url, "up", timeout=1), now=now())
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"prometheus at {blackhole.url} is unreachable: no answer within 1s (timeout)" in message
    assert "provider.prometheus.timeout" in message


async def test_prometheus_stopped_mid_way(
    fresh_prometheus: PrometheusServer, prometheus_provider: PrometheusProvider
) -> None:
    address = fresh_prometheus.url
    assert (await prometheus_provider.measure(spec(address, "vector(1)"), now=now())).value == [1.0]
    fresh_prometheus.stop()
    with pytest.raises(ProviderError, match=rf"prometheus at {address} is unreachable: connection refused"):
        await prometheus_provider.measure(spec(address, "vector(1)"), now=now())


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(502, "bad gateway", r"answered HTTP 502 \(expected 2xx\): bad gateway", id="non-2xx"),
        pytest.param(
            422,
            {"status": "error", "errorType": "execution", "error": "query timed out"},
            r"rejected the query \(execution\): query timed out",
            id="api-error-status",
        ),
        pytest.param(
            200,
            "<html>not prometheus</html>",
            r"returned a body that is not a Prometheus API response: <html>",
            id="undecodable",
        ),
        pytest.param(
            200,
            {"status": "success", "data": {"resultType": "string", "result": [1, "x"]}},
            r"returned a 'string' result, which is not supported",
            id="string-result",
        ),
    ],
)
async def test_bad_responses(
    stub_server: StubHTTPServer,
    prometheus_provider: PrometheusProvider,
    status: int,
    body: Any,
    expected: str,
) -> None:
    stub_server.respond(status, body)
    with pytest.raises(ProviderError, match=rf"prometheus at {stub_server.url} {expected}"):
        await prometheus_provider.measure(spec(stub_server.url, "up"), now=now())


async def test_warnings_land_in_metadata(stub_server: StubHTTPServer, prometheus_provider: PrometheusProvider) -> None:
    stub_server.respond(200, {**VECTOR_BODY, "warnings": ["w1", "w2"]})
    result = await prometheus_provider.measure(spec(stub_server.url, "up"), now=now())
    assert result.metadata == {RESOLVED_QUERY_KEY: "up", "warnings": '"w1", "w2"'}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"timeout": -1}, r"timeout should not be negative", id="negative-timeout"),
        pytest.param({"address": "prometheus:9090"}, r"not an http\(s\) URL", id="address-not-url"),
        pytest.param({"query": " "}, r"query is empty", id="empty-query"),
        pytest.param({"rangeQuery": {"start": "", "step": "1m"}}, r"rangeQuery\.start is empty", id="no-start"),
        pytest.param(
            {"rangeQuery": {"start": "now() - ", "step": "1m"}},
            r"rangeQuery\.start 'now\(\) -' is not a valid time expression",
            id="bad-start-expression",
        ),
        pytest.param(
            {"rangeQuery": {"start": "1 + 1", "step": "1m"}}, r"evaluated to 2, not a time", id="start-not-a-time"
        ),
        pytest.param(
            {"rangeQuery": {"start": "now()", "end": 'now() - duration("1h")', "step": "1m"}},
            r"end \(.*\) is before start",
            id="end-before-start",
        ),
        pytest.param(
            {"rangeQuery": {"start": "now()", "step": "soon"}}, r"rangeQuery\.step: invalid duration", id="bad-step"
        ),
        pytest.param({"authentication": {"sigv4": {"region": "x"}}}, r"sigv4 is not supported", id="sigv4-unsupported"),
    ],
)
async def test_invalid_spec(prometheus_provider: PrometheusProvider, extra: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProviderError, match=expected):
        await prometheus_provider.measure(spec("http://127.0.0.1:9", "up") | extra, now=now())


# -- formatting helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(10.0, "10", id="integral"),
        pytest.param(0.5, "0.5", id="fraction"),
        pytest.param(0.1 + 0.2, "0.30000000000000004", id="shortest-round-trip"),
        pytest.param(1e21, "1000000000000000000000", id="large-no-exponent"),
        pytest.param(1e-7, "0.0000001", id="small-no-exponent"),
        pytest.param(-2.0, "-2", id="negative"),
        pytest.param(-0.0, "-0", id="negative-zero"),
        pytest.param(math.nan, "NaN", id="nan"),
        pytest.param(math.inf, "+Inf", id="inf"),
        pytest.param(-math.inf, "-Inf", id="minus-inf"),
    ],
)
def test_format_go_float(value: float, text: str) -> None:
    assert format_go_float(value) == text


def test_format_values() -> None:
    assert format_values([]) == "[]"
    assert format_values([10.0, 11.5, math.nan]) == "[10,11.5,NaN]"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("30s", 30, id="seconds"),
        pytest.param("1m", 60, id="minutes"),
        pytest.param("1h30m", 5400, id="compound"),
        pytest.param("1.5h", 5400, id="fractional"),
        pytest.param("500ms", 0.5, id="millis"),
        pytest.param("15", 15, id="plain-seconds"),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


def test_parse_go_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration("1 minute")


async def test_range_query_request_and_matrix(
    stub_server: StubHTTPServer, prometheus_provider: PrometheusProvider
) -> None:
    stub_server.respond(
        200,
        {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [
                    {"metric": {"a": "1"}, "values": [[1, "1"], [2, "0.5"]]},
                    {"metric": {"a": "2"}, "values": [[1, "NaN"], [2, "+Inf"]]},
                ],
            },
        },
    )
    measured_at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    range_query = {"start": 'now() - duration("1h")', "step": "90s"}
    result = await prometheus_provider.measure(spec(stub_server.url, "up", rangeQuery=range_query), now=measured_at)
    assert result.value[0:2] == [1.0, 0.5]
    assert math.isnan(result.value[2])
    assert result.value[3] == math.inf
    assert result.text == "[1,0.5,NaN,+Inf]"
    [request] = stub_server.requests
    assert request.path == "/api/v1/query_range"
    end = measured_at.timestamp()
    assert parse_qs(request.body.decode()) == {
        "query": ["up"],
        "start": [f"{end - 3600:.3f}"],
        "end": [f"{end:.3f}"],
        "step": ["90"],
    }
    assert result.metadata == {
        RESOLVED_QUERY_KEY: "up",
        f"{RESOLVED_QUERY_KEY}Start": "2024-01-02T02:04:05Z",
        f"{RESOLVED_QUERY_KEY}End": "2024-01-02T03:04:05Z",
        f"{RESOLVED_QUERY_KEY}Step": "90s",
    }


# -- scraping (the fixture library's second data path) -----------------------------------------------


async def test_scraped_target_is_measured(
    fresh_prometheus: PrometheusServer, stub_server: StubHTTPServer, prometheus_provider: PrometheusProvider
) -> None:
    stub_server.respond(
        200,
        '# TYPE rollouts_test_scraped gauge\nrollouts_test_scraped{code="200"} 42\n',
        content_type="text/plain; version=0.0.4",
    )
    fresh_prometheus.add_target(stub_server.host_port, {"app": "canary"})
    fresh_prometheus.wait_for('rollouts_test_scraped{app="canary"}', timeout=20)
    result = await prometheus_provider.measure(
        spec(fresh_prometheus.url, 'sum(rollouts_test_scraped{app="canary"})'), now=now()
    )
    assert result.value == [42.0]
    assert result.text == "[42]"
    assert any(request.path == "/metrics" for request in stub_server.requests)


def test_missing_prometheus_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROMETHEUS_BIN_ENV, "/nonexistent/prometheus")
    with pytest.raises(PrometheusNotInstalled, match=r"prometheus not found: run the test command from README\.md"):
        require_binaries()
