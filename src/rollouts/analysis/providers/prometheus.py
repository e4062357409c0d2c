"""The `prometheus` metric provider: run a PromQL query over Prometheus' HTTP API.

Argo Rollouts' `provider.prometheus` fields:

- `address`: the server's base URL (a path prefix is kept: `http://host/prometheus`). When
  empty: `$ARGO_ROLLOUTS_PROMETHEUS_ADDRESS`, then the provider's constructor default.
- `query`: PromQL, with `{{args.*}}` already substituted by the engine.
- `timeout`: seconds, default 30; negative is an error. (Argo would time out at once on 0;
  here 0 means the default.)
- `insecure`: skip TLS verification. `headers: [{key, value}]` are sent with every request
  (a bearer token is just an `Authorization` header);
  `authentication.basicAuth: {username, password}` sends HTTP basic auth.
- `rangeQuery: {start, end, step}`: run a range query instead of an instant query. `start` and
  `end` are time expressions such as `now() - duration("1h")` (`end` defaults to now),
  `step` is a duration such as `1m` or `30s`.

Results: a scalar is a float, a vector a list of floats (one per series), a matrix (range
query) the flattened list of every series' samples; NaN and ±Inf stay floats. The measurement
text is written as Argo writes it (Go's `FormatFloat(v, 'f', -1, 64)`): `10`, `0.5`, `NaN`,
`+Inf`, and `[10,11]` / `[]` for lists. Metadata carries `ResolvedPrometheusQuery` (and
`ResolvedPrometheusQueryStart`/`End`/`Step` for a range query, plus `warnings` when
Prometheus returns any, formatted as Argo does: `"w1", "w2"`).

When Prometheus cannot answer (unreachable, timeout, non-2xx, a rejected query, a body that
is not an API response) the `ProviderError` names the address and the query, so the run's
Error message says which query against which server — unlike a Failed metric, where the
query answered and the condition said no.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from rollouts.analysis.providers.base import ProviderError, ProviderResult
from rollouts.analysis.providers.web import (
    ClientPool,
    body_snippet,
    check_url,
    describe_http_failure,
    format_go_float,
    header_pairs,
)

__all__ = [
    "ADDRESS_ENV_VAR",
    "DEFAULT_PROMETHEUS_TIMEOUT_SECONDS",
    "RESOLVED_QUERY_KEY",
    "PrometheusProvider",
    "format_values",
    "parse_go_duration",
]

ADDRESS_ENV_VAR = "ARGO_ROLLOUTS_PROMETHEUS_ADDRESS"
RESOLVED_QUERY_KEY = "ResolvedPrometheusQuery"
DEFAULT_PROMETHEUS_TIMEOUT_SECONDS = 30.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go/Prometheus duration (`1m`, `1h30m`, `1.5s`, `500ms`) or plain seconds (`30`)."""
    raw = text.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"invalid duration {text!r}")
        return seconds
    sign = 1.0
    body = raw
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if not match:
            raise ValueError(f"invalid duration {text!r} (expected e.g. 30s, 1m, 1h30m)")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total


def format_values(values: list[float]) -> str:
    """A list of sample values as Argo writes it: `[10,11]`, `[]`."""
    return "[" + ",".join(format_go_float(v) for v in values) + "]"


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    return _as_utc(moment).isoformat().replace("+00:00", "Z")


def _unix(moment: datetime) -> str:
    return f"{_as_utc(moment).timestamp():.3f}"


def _time_expression(expression: Any, *, field: str, now: datetime) -> datetime:
    """Evaluate a rangeQuery `start`/`end` expression such as `now() - duration("1h")`."""
    if isinstance(expression, datetime):
        return _as_utc(expression)
    text = str(expression).strip()
    from rollouts.analysis.expr import evaluate  # imported here: providers load without the engine

    try:
        value = evaluate(text, {}, now=lambda: now)
    except Exception as exc:
        raise ProviderError(
            f'{field} {text!r} is not a valid time expression ({exc}) — use e.g. now() - duration("1h")'
        ) from None
    if isinstance(value, datetime):
        return _as_utc(value)
    raise ProviderError(f'{field} {text!r} evaluated to {value!r}, not a time — use e.g. now() - duration("1h")')


def _sample(pair: Any, *, address: str) -> float:
    if not isinstance(pair, list) or len(pair) != 2:
        raise ProviderError(f"prometheus at {address} returned a malformed sample {pair!r}")
    try:
        return float(pair[1])
    except (TypeError, ValueError):
        raise ProviderError(f"prometheus at {address} returned a non-numeric sample {pair[1]!r}") from None


class PrometheusProvider:
    """`provider.prometheus`: one query per measurement; see the module docstring."""

    kind = "prometheus"

    def __init__(self, *, address: str | None = None, client: httpx.AsyncClient | None = None) -> None:
        """`address` is used when neither the metric nor `$ARGO_ROLLOUTS_PROMETHEUS_ADDRESS` sets one;
        `client` (for tests) replaces the lazily created shared clients and is not closed by `aclose`."""
        self.default_address = address or None
        self._clients = ClientPool(client)

    async def aclose(self) -> None:
        await self._clients.aclose()

    def resolve_address(self, spec: Mapping[str, Any]) -> str:
        address = str(spec.get("address") or "").strip()
        field = "provider.prometheus.address"
        if not address:
            address = os.environ.get(ADDRESS_ENV_VAR, "").strip()
            field = f"${ADDRESS_ENV_VAR}"
        if not address and self.default_address:
            address = self.default_address
            field = "the default Prometheus address"
        if not address:
            raise ProviderError(
                "prometheus address is not configured — set the metric's provider.prometheus.address"
                f" (or ${ADDRESS_ENV_VAR})"
            )
        return check_url(address, what="prometheus", field=field)

    async def measure(
        self, spec: dict[str, Any], *, now: datetime, context: Mapping[str, str] | None = None
    ) -> ProviderResult:
        address = self.resolve_address(spec)
        query = str(spec.get("query") or "")
        if not query.strip():
            raise ProviderError("provider.prometheus.query is empty — set the PromQL query to run")
        timeout = self._timeout(spec)
        headers = header_pairs(spec.get("headers"), field="provider.prometheus.headers")
        request: dict[str, Any] = {"headers": headers, "timeout": timeout}
        auth = self._basic_auth(spec)
        if auth is not None:
            request["auth"] = auth
        metadata = {RESOLVED_QUERY_KEY: query}

        range_query = spec.get("rangeQuery")
        if range_query:
            if not isinstance(range_query, Mapping):
                raise ProviderError("provider.prometheus.rangeQuery must be an object {start, end, step}")
            params = self._range_params(range_query, query, now=now, metadata=metadata)
            path = "/api/v1/query_range"
        else:
            params = {"query": query, "time": _unix(now)}
            path = "/api/v1/query"

        url = address.rstrip("/") + path
        client = self._clients.get(insecure=bool(spec.get("insecure")))
        try:
            try:
                async with asyncio.timeout(timeout):
                    response = await client.post(url, data=params, **request)
                    if response.status_code in (405, 501):  # a proxy that only allows GET, as Go's client does
                        response = await client.get(url, params=params, **request)
            except (httpx.HTTPError, OSError, TimeoutError) as exc:
                reason = describe_http_failure(exc, timeout=timeout)
                hint = " or raise provider.prometheus.timeout" if "timeout" in reason else " or start Prometheus"
                raise ProviderError(
                    f"prometheus at {address} is unreachable: {reason} — check the metric's"
                    f" provider.prometheus.address{hint}"
                ) from None
            values, text, warnings = self._parse(response, address=address, query=query)
        except ProviderError as exc:
            # "The source could not answer" names the address (above) and the query, so a run's
            # Error message says which query against which Prometheus.
            raise ProviderError(_with_query(str(exc), query)) from None
        if warnings:
            metadata["warnings"] = warnings
        return ProviderResult(value=values, text=text, metadata=metadata)

    # -- request pieces ----------------------------------------------------------------------------

    @staticmethod
    def _timeout(spec: Mapping[str, Any]) -> float:
        raw = spec.get("timeout")
        if raw is None or raw == "":
            return DEFAULT_PROMETHEUS_TIMEOUT_SECONDS
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            raise ProviderError(f"provider.prometheus.timeout must be a number of seconds, got {raw!r}") from None
        if seconds < 0 or math.isnan(seconds):
            raise ProviderError(f"provider.prometheus.timeout should not be negative (got {raw!r})")
        return seconds or DEFAULT_PROMETHEUS_TIMEOUT_SECONDS

    @staticmethod
    def _basic_auth(spec: Mapping[str, Any]) -> httpx.BasicAuth | None:
        authentication = spec.get("authentication") or {}
        if not isinstance(authentication, Mapping):
            raise ProviderError("provider.prometheus.authentication must be an object")
        for unsupported in ("sigv4", "oauth2"):
            if authentication.get(unsupported):
                raise ProviderError(
                    f"provider.prometheus.authentication.{unsupported} is not supported — use basicAuth"
                    " or an Authorization header in provider.prometheus.headers"
                )
        basic = authentication.get("basicAuth")
        if not basic:
            return None
        if not isinstance(basic, Mapping) or not basic.get("username"):
            raise ProviderError("provider.prometheus.authentication.basicAuth needs a username (and password)")
        return httpx.BasicAuth(str(basic["username"]), str(basic.get("password") or ""))

    @staticmethod
    def _range_params(
        range_query: Mapping[str, Any], query: str, *, now: datetime, metadata: dict[str, str]
    ) -> dict[str, str]:
        field = "provider.prometheus.rangeQuery"
        if not range_query.get("start"):
            raise ProviderError(f'{field}.start is empty — set it, e.g. now() - duration("1h")')
        start = _time_expression(range_query["start"], field=f"{field}.start", now=now)
        end_expression = range_query.get("end")
        end = _time_expression(end_expression, field=f"{field}.end", now=now) if end_expression else _as_utc(now)
        step_text = str(range_query.get("step") or "").strip()
        if not step_text:
            raise ProviderError(f"{field}.step is empty — set it, e.g. 1m")
        try:
            step = parse_go_duration(step_text)
        except ValueError as exc:
            raise ProviderError(f"{field}.step: {exc}") from None
        if step <= 0:
            raise ProviderError(f"{field}.step must be positive, got {step_text!r}")
        if end < start:
            raise ProviderError(f"{field}: end ({_rfc3339(end)}) is before start ({_rfc3339(start)}) — swap them")
        metadata[f"{RESOLVED_QUERY_KEY}Start"] = _rfc3339(start)
        metadata[f"{RESOLVED_QUERY_KEY}End"] = _rfc3339(end)
        metadata[f"{RESOLVED_QUERY_KEY}Step"] = step_text
        return {"query": query, "start": _unix(start), "end": _unix(end), "step": format_go_float(step)}

    # -- response ----------------------------------------------------------------------------------

    @staticmethod
    def _parse(response: httpx.Response, *, address: str, query: str) -> tuple[Any, str, str]:
        """(value, text, warnings) from a query response, or a ProviderError saying what is wrong."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, Mapping) and payload.get("status") == "error":
            error_type = payload.get("errorType") or "error"
            raise ProviderError(
                f"prometheus at {address} rejected the query ({error_type}): {payload.get('error')}"
                f" — fix provider.prometheus.query: {query}"
            )
        if not 200 <= response.status_code < 300:
            raise ProviderError(
                f"prometheus at {address} answered HTTP {response.status_code} (expected 2xx): "
                f"{body_snippet(response) or '<empty body>'} — check provider.prometheus.address"
                " (it must be the Prometheus base URL) and its headers/authentication"
            )
        if not isinstance(payload, Mapping) or payload.get("status") != "success":
            raise ProviderError(
                f"prometheus at {address} returned a body that is not a Prometheus API response: "
                f"{body_snippet(response) or '<empty body>'} — check provider.prometheus.address"
            )
        data = payload.get("data")
        if not isinstance(data, Mapping):
            raise ProviderError(f"prometheus at {address} returned a response without data")
        result_type, result = data.get("resultType"), data.get("result")
        warnings = _warnings_metadata(payload)

        if result_type == "scalar":
            value = _sample(result, address=address)
            return value, format_go_float(value), warnings
        if result_type in ("vector", "matrix") and isinstance(result, list):
            values: list[float] = []
            for series in result:
                if not isinstance(series, Mapping):
                    raise ProviderError(f"prometheus at {address} returned a malformed series {series!r}")
                if "histogram" in series or "histograms" in series:
                    raise ProviderError(
                        f"prometheus at {address} returned native histogram samples, which are not"
                        " supported — query a float series (e.g. histogram_quantile(...))"
                    )
                if result_type == "vector":
                    values.append(_sample(series.get("value"), address=address))
                else:
                    values.extend(_sample(pair, address=address) for pair in series.get("values") or [])
            return values, format_values(values), warnings
        raise ProviderError(
            f"prometheus at {address} returned a {result_type!r} result, which is not supported"
            " (Prometheus metric type not supported) — make the query return a scalar or a vector"
        )


def _with_query(message: str, query: str) -> str:
    """`message`, naming the query it is about unless it already does."""
    shown = query.strip()
    return message if shown in message else f"{message} (query: {shown})"


def _warnings_metadata(payload: Mapping[str, Any]) -> str:
    """Prometheus warnings formatted as Argo stores them: `"w1", "w2"`."""
    warnings = payload.get("warnings") or []
    return ", ".join(f'"{w}"' for w in warnings)
