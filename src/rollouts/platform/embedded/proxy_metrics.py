"""Metrics of the embedded proxy: Prometheus series and a sliding-window summary for `/stats`.

The hot path only bumps plain Python counters on a `RevisionStats` (one per service and
revision); a custom collector turns them into Prometheus families when scraped, so a request
costs a few integer additions rather than several locked metric updates. Each `ProxyMetrics`
has its own `CollectorRegistry` (never the global one).

Series:

* `rollouts_proxy_requests_total{service,revision,code}` counter
* `rollouts_proxy_request_duration_seconds{service,revision}` histogram (1 ms … 10 s)
* `rollouts_proxy_requests_in_flight{service,revision}` gauge
* `rollouts_proxy_upstream_errors_total{service,revision,reason}` counter

`/stats` (see `RevisionStats.summary`) adds, per revision, the totals and the numbers of the last
`window_seconds` (30 by default) kept in per-second buckets: requests, 5xx errors, error rate
and the 95th-percentile latency, estimated from fine logarithmic latency buckets (±5 %).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds of the Prometheus latency histogram (plus +Inf)."""

_BUCKET_LABELS = tuple(repr(b) for b in DURATION_BUCKETS)

# Fine buckets for the window's percentile: 100 µs … ~2 min, each 10 % wider than the last.
_FINE_RATIO = 1.1
_FINE_BOUNDS: tuple[float, ...] = tuple(0.0001 * _FINE_RATIO**i for i in range(148))
_FINE_N = len(_FINE_BOUNDS) + 1

METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

DEFAULT_WINDOW_SECONDS = 30


class _Window:
    """Per-second buckets of the last `seconds` seconds: requests, errors, latency counts."""

    __slots__ = ("_errors", "_hists", "_requests", "_stamps", "seconds")

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self._stamps = [-1] * seconds
        self._requests = [0] * seconds
        self._errors = [0] * seconds
        self._hists: list[list[int] | None] = [None] * seconds

    def summary(self, now: float) -> tuple[int, int, float]:
        """(requests, errors, p95 latency in seconds) over the window ending at `now`."""
        sec = int(now)
        oldest = sec - self.seconds + 1
        requests = errors = 0
        merged = [0] * _FINE_N
        for i, stamp in enumerate(self._stamps):
            hist = self._hists[i]
            if oldest <= stamp <= sec and hist is not None:
                requests += self._requests[i]
                errors += self._errors[i]
                for j, c in enumerate(hist):
                    if c:
                        merged[j] += c
        return requests, errors, _quantile(merged, requests, 0.95)


def _quantile(counts: list[int], total: int, q: float) -> float:
    if total <= 0:
        return 0.0
    rank = q * total
    seen = 0
    for j, c in enumerate(counts):
        if c and seen + c >= rank:
            lower = _FINE_BOUNDS[j - 1] if j > 0 else 0.0
            upper = _FINE_BOUNDS[j] if j < len(_FINE_BOUNDS) else _FINE_BOUNDS[-1]
            return lower + (upper - lower) * ((rank - seen) / c)
        seen += c
    return _FINE_BOUNDS[-1]


class RevisionStats:
    """Counters of one service and revision. `start` then `finish` once per request."""

    __slots__ = (
        "_clock",
        "codes",
        "duration_buckets",
        "duration_sum",
        "errors",
        "in_flight",
        "requests",
        "revision",
        "service",
        "upstream_errors",
        "window",
    )

    def __init__(self, service: str, revision: str, window_seconds: int, clock: Callable[[], float]) -> None:
        self.service = service
        self.revision = revision
        self._clock = clock
        self.codes: dict[int, int] = {}
        self.requests = 0
        self.errors = 0
        self.in_flight = 0
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.upstream_errors: dict[str, int] = {}
        self.window = _Window(window_seconds)

    def start(self) -> None:
        self.in_flight += 1

    def finish(self, code: int, duration: float) -> None:
        """A request that `start`ed got its response (or was given up with `code`)."""
        self.in_flight -= 1
        self.record(code, duration)

    def record(self, code: int, duration: float) -> None:
        """A request answered (`finish` without the in-flight count: e.g. rejected while parsing).

        Hot path: everything inline, no calls but the clock and two bisections.
        """
        codes = self.codes
        if code in codes:
            codes[code] += 1
        else:
            codes[code] = 1
        self.requests += 1
        error = code >= 500
        if error:
            self.errors += 1
        if duration < 0.0:
            duration = 0.0
        self.duration_buckets[bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration
        # the window's current one-second slot
        w = self.window
        sec = int(self._clock())
        i = sec % w.seconds
        hist = w._hists[i]
        if hist is None or w._stamps[i] != sec:
            w._stamps[i] = sec
            w._requests[i] = 0
            w._errors[i] = 0
            hist = w._hists[i] = [0] * _FINE_N
        w._requests[i] += 1
        if error:
            w._errors[i] += 1
        hist[bisect_left(_FINE_BOUNDS, duration)] += 1

    def upstream_error(self, reason: str) -> None:
        self.upstream_errors[reason] = self.upstream_errors.get(reason, 0) + 1

    def summary(self) -> dict[str, Any]:
        """This revision's part of `/stats`."""
        n, e, p95 = self.window.summary(self._clock())
        return {
            "requests": self.requests,
            "errors": self.errors,
            "window_seconds": self.window.seconds,
            "window_requests": n,
            "window_errors": e,
            "error_rate": (e / n) if n else 0.0,
            "p95_latency_seconds": round(p95, 6),
        }


class _ProxyCollector(Collector):
    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        labels2 = ["service", "revision"]
        requests = CounterMetricFamily(
            "rollouts_proxy_requests_total",
            "Requests answered by the embedded proxy, by service, revision and status code.",
            labels=[*labels2, "code"],
        )
        duration = HistogramMetricFamily(
            "rollouts_proxy_request_duration_seconds",
            "Time from the request head to the end of the response, by service and revision.",
            labels=labels2,
        )
        in_flight = GaugeMetricFamily(
            "rollouts_proxy_requests_in_flight",
            "Requests being proxied now, by service and revision.",
            labels=labels2,
        )
        upstream_errors = CounterMetricFamily(
            "rollouts_proxy_upstream_errors_total",
            "Failures talking to a backend (connect, timeout, reset, invalid response), by reason.",
            labels=[*labels2, "reason"],
        )
        for rs in list(self._metrics.all_revisions()):
            key = [rs.service, rs.revision]
            for code, count in sorted(rs.codes.items()):
                requests.add_metric([*key, str(code)], count)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for label, count in zip(_BUCKET_LABELS, rs.duration_buckets, strict=False):
                cumulative += count
                buckets.append((label, cumulative))
            buckets.append(("+Inf", cumulative + rs.duration_buckets[-1]))
            duration.add_metric(key, buckets, rs.duration_sum)
            in_flight.add_metric(key, rs.in_flight)
            for reason, count in sorted(rs.upstream_errors.items()):
                upstream_errors.add_metric([*key, reason], count)
        yield requests
        yield duration
        yield in_flight
        yield upstream_errors


class ProxyMetrics:
    """The proxy's counters, with their own Prometheus registry.

    `clock` (monotonic seconds) drives the `/stats` window; tests may pass a fake one.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds < 1:
            raise ValueError(f"window_seconds must be at least 1, got {window_seconds}")
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.window_seconds = window_seconds
        self.clock = clock
        self._revisions: dict[tuple[str, str], RevisionStats] = {}
        self.registry.register(_ProxyCollector(self))

    def revision(self, service: str, revision: str) -> RevisionStats:
        """The counters of `service` and `revision`, created on first use."""
        key = (service, revision)
        rs = self._revisions.get(key)
        if rs is None:
            rs = self._revisions[key] = RevisionStats(service, revision, self.window_seconds, self.clock)
        return rs

    def all_revisions(self) -> Iterator[RevisionStats]:
        return iter(list(self._revisions.values()))

    def revisions_of(self, service: str) -> dict[str, RevisionStats]:
        return {rs.revision: rs for (svc, _), rs in list(self._revisions.items()) if svc == service}

    def forget_service(self, service: str) -> None:
        """Drop the counters of a service (e.g. once it is deleted for good)."""
        for key in [k for k in self._revisions if k[0] == service]:
            del self._revisions[key]

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of this registry."""
        return generate_latest(self.registry)

    content_type = METRICS_CONTENT_TYPE
