"""Metrics of the embedded proxy: Prometheus series and a sliding-window summary for `/stats`.

The hot path only appends `(code, duration, now)` to a `RevisionStats` (one per service and
revision); the counters are brought up to date from that list in batches (`drain`: by the proxy's
timer, and before anything reads them), and a custom collector turns them into Prometheus
families when scraped. So a request costs a list append rather than a Python call with two
bisections, or several locked metric updates. Each `ProxyMetrics`
has its own `CollectorRegistry` (never the global one).

Series:

* `rollouts_proxy_requests_total{service,revision,code}` counter
* `rollouts_proxy_request_duration_seconds{service,revision}` histogram (1 ms … 10 s)
* `rollouts_proxy_requests_in_flight{service,revision}` gauge
* `rollouts_proxy_upstream_errors_total{service,revision,reason}` counter
* `rollouts_proxy_header_routed_requests_total{service,revision}` counter: requests a header
  route sent to this (canary) revision
* `rollouts_proxy_mirrored_requests_total{service,revision,code}` counter: mirrored copies this
  revision answered, by status code (the copies' responses go to no client)
* `rollouts_proxy_mirror_dropped_total{service,revision,reason}` counter: copies for this
  revision not made or not answered (`proxy_mirror`: overload, body, no_backend, timeout, error)

`AdminEndpoint` serves them (`/metrics`, `/stats`). `/stats` (see `RevisionStats.summary`) adds, per revision, the totals and the numbers of the last
`window_seconds` (30 by default) kept in per-second buckets: requests, 5xx errors, error rate
and the 95th-percentile latency, estimated from fine logarithmic latency buckets (±5 %).
"""

from __future__ import annotations

import asyncio
import errno
import json
import time
from bisect import bisect_left, bisect_right
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

from rollouts.platform.embedded.dataplane import PortInUseError

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

# Fine buckets for the window's percentile: 100 µs … ~2 min, each 10 % wider than the last,
# plus the Prometheus bounds. With those among them, the fine bucket of a duration tells its
# Prometheus bucket exactly (`_FINE_TO_COARSE`): one bisection per request instead of two.
_FINE_RATIO = 1.1
_FINE_BOUNDS: tuple[float, ...] = tuple(sorted({0.0001 * _FINE_RATIO**i for i in range(148)} | set(DURATION_BUCKETS)))
_FINE_N = len(_FINE_BOUNDS) + 1
_FINE_LAST = len(_FINE_BOUNDS)  # the bucket of durations above every bound
_FINE_TO_COARSE: tuple[int, ...] = (
    *(bisect_left(DURATION_BUCKETS, bound) for bound in _FINE_BOUNDS),
    len(DURATION_BUCKETS),
)

METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

DEFAULT_WINDOW_SECONDS = 30


class _Window:
    """Per-second buckets of the last `seconds` seconds: requests, errors, latency counts."""

    __slots__ = ("_errors", "_hists", "_stamps", "seconds")

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self._stamps = [-1] * seconds
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
                requests += sum(hist)
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
        "header_routed",
        "in_flight",
        "mirror_codes",
        "mirror_dropped",
        "pending",
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
        self.header_routed = 0
        self.mirror_codes: dict[int, int] = {}
        self.mirror_dropped: dict[str, int] = {}
        self.window = _Window(window_seconds)
        # Requests answered but not counted yet, (code, duration, time.monotonic()) each; see
        # `drain`. None when the clock is not `time.monotonic` (then use `record`).
        self.pending: list[tuple[int, float, float]] | None = [] if clock is time.monotonic else None

    def start(self) -> None:
        self.in_flight += 1

    def finish(self, code: int, duration: float, now: float | None = None) -> None:
        """A request that `start`ed got its response (or was given up with `code`)."""
        self.in_flight -= 1
        self.record(code, duration, now)

    def record(self, code: int, duration: float, now: float | None = None) -> None:
        """A request answered (`finish` without the in-flight count: e.g. rejected while parsing).

        `now`: the current `time.monotonic()`, when the caller has read it anyway (used only if
        it is this counter's clock). Hot path: everything inline, no calls but one bisection.
        """
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.requests += 1
        if duration < 0.0:
            duration = 0.0
        j = bisect_left(_FINE_BOUNDS, duration)
        self.duration_buckets[_FINE_TO_COARSE[j]] += 1
        self.duration_sum += duration
        # the window's current one-second slot
        if now is None or self._clock is not time.monotonic:
            now = self._clock()
        w = self.window
        sec = int(now)
        i = sec % w.seconds
        hist = w._hists[i]
        if hist is None or w._stamps[i] != sec:
            w._stamps[i] = sec
            w._errors[i] = 0
            hist = w._hists[i] = [0] * _FINE_N
        hist[j] += 1
        if code >= 500:
            self.errors += 1
            w._errors[i] += 1

    def drain(self) -> None:
        """Count the `pending` requests, as `record` would one by one.

        Batched so that the work per request happens in C (`zip`, `sum`, `sorted`) rather than
        in a Python loop: the entries are in time order, so those of one second are a slice;
        its durations are sorted, and each latency bucket they fall in is then one slice of
        them (two bisections per bucket met, not one per request).
        """
        pending = self.pending
        if not pending:
            return
        self.pending = []
        codes_seen, durations, times = zip(*pending, strict=True)
        codes = self.codes
        errors = 0
        for code in set(codes_seen):
            count = codes_seen.count(code)
            codes[code] = codes.get(code, 0) + count
            if code >= 500:
                errors += count
        self.requests += len(pending)
        self.errors += errors
        if min(durations) >= 0.0:
            self.duration_sum += sum(durations)
        else:  # (like `record`, a negative duration counts as 0)
            self.duration_sum += sum(d for d in durations if d > 0.0)
        buckets = self.duration_buckets
        # the latency buckets and the window, one second at a time
        w = self.window
        start, n = 0, len(times)
        while start < n:
            sec = int(times[start])
            stop = bisect_left(times, sec + 1, start)
            counts: list[tuple[int, int]] = []  # (fine bucket, requests)
            ds = sorted(durations[start:stop])
            m = len(ds)
            i = 0
            while i < m:
                j = bisect_left(_FINE_BOUNDS, ds[i])  # (a negative duration: bucket 0)
                k = bisect_right(ds, _FINE_BOUNDS[j], i) if j < _FINE_LAST else m
                counts.append((j, k - i))
                buckets[_FINE_TO_COARSE[j]] += k - i
                i = k
            i = sec % w.seconds
            hist = w._hists[i]
            stamp = w._stamps[i]
            if hist is None or stamp < sec:
                w._stamps[i] = sec
                w._errors[i] = 0
                hist = w._hists[i] = [0] * _FINE_N
            if stamp <= sec:  # (else the slot already holds a later second: too old to count)
                for j, count in counts:
                    hist[j] += count
                if errors:
                    w._errors[i] += sum(1 for code in codes_seen[start:stop] if code >= 500)
            start = stop

    def upstream_error(self, reason: str) -> None:
        self.upstream_errors[reason] = self.upstream_errors.get(reason, 0) + 1

    def mirror_answered(self, code: int) -> None:
        """A mirrored copy sent to this revision got a response with `code` (dropped)."""
        self.mirror_codes[code] = self.mirror_codes.get(code, 0) + 1

    def mirror_drop(self, reason: str) -> None:
        """A copy for this revision was not made, or got no response (see `proxy_mirror`)."""
        self.mirror_dropped[reason] = self.mirror_dropped.get(reason, 0) + 1

    def summary(self) -> dict[str, Any]:
        """This revision's part of `/stats`."""
        self.drain()
        n, e, p95 = self.window.summary(self._clock())
        return {
            "requests": self.requests,
            "errors": self.errors,
            "window_seconds": self.window.seconds,
            "window_requests": n,
            "window_errors": e,
            "error_rate": (e / n) if n else 0.0,
            "p95_latency_seconds": round(p95, 6),
            "header_routed": self.header_routed,
            "mirrored": sum(self.mirror_codes.values()),
            "mirror_dropped": sum(self.mirror_dropped.values()),
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
        header_routed = CounterMetricFamily(
            "rollouts_proxy_header_routed_requests_total",
            "Requests sent to this revision by a header route (setHeaderRoute), whatever the weight.",
            labels=labels2,
        )
        mirrored = CounterMetricFamily(
            "rollouts_proxy_mirrored_requests_total",
            "Mirrored copies (setMirrorRoute) answered by this revision, by status code; no client sees them.",
            labels=[*labels2, "code"],
        )
        mirror_dropped = CounterMetricFamily(
            "rollouts_proxy_mirror_dropped_total",
            "Mirrored copies for this revision not made or not answered, by reason "
            "(overload, body, no_backend, timeout, error).",
            labels=[*labels2, "reason"],
        )
        for rs in list(self._metrics.all_revisions()):
            rs.drain()
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
            if rs.header_routed:
                header_routed.add_metric(key, rs.header_routed)
            for code, count in sorted(rs.mirror_codes.items()):
                mirrored.add_metric([*key, str(code)], count)
            for reason, count in sorted(rs.mirror_dropped.items()):
                mirror_dropped.add_metric([*key, reason], count)
        yield requests
        yield duration
        yield in_flight
        yield upstream_errors
        yield header_routed
        yield mirrored
        yield mirror_dropped


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

    def drain(self) -> None:
        """Count every revision's pending requests (see `RevisionStats.drain`)."""
        for rs in list(self._revisions.values()):
            rs.drain()

    def forget_service(self, service: str) -> None:
        """Drop the counters of a service (e.g. once it is deleted for good)."""
        for key in [k for k in self._revisions if k[0] == service]:
            del self._revisions[key]

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of this registry; through the registry's
        own `render` when it has one (the controller's pre-renders its per-rollout gauges)."""
        own = getattr(self.registry, "render", None)
        return bytes(own()) if callable(own) else generate_latest(self.registry)

    content_type = METRICS_CONTENT_TYPE


class AdminEndpoint:
    """The proxy's admin listener: `GET /metrics` (Prometheus text format), `GET /stats` and
    `GET /stats/<service>` (JSON, from `stats`), `GET /healthz`. A small HTTP/1.1 server on
    asyncio streams: it is not on the data path."""

    def __init__(self, metrics: ProxyMetrics, stats: Callable[[str | None], dict[str, Any]]) -> None:
        self._metrics = metrics
        self._stats = stats
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._closed = False
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on `host:port`; `PortInUseError` when the port is taken."""
        try:
            self._server = await asyncio.start_server(self._connection, host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    errno.EADDRINUSE, f"cannot listen for the proxy admin: port {port} on {host} is in use"
                ) from exc
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self._closed:
                try:
                    async with asyncio.timeout(60.0):
                        head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                lines = head.split(b"\r\n")
                request_line = lines[0].split()
                keep = len(request_line) == 3 and request_line[2] == b"HTTP/1.1"
                for line in lines[1:]:
                    lname, _, value = line.partition(b":")
                    lname = lname.strip().lower()
                    if lname == b"connection" and b"close" in value.lower():
                        keep = False
                    elif lname in (b"content-length", b"transfer-encoding"):
                        keep = False  # bodies are not read: do not try to parse what follows
                if len(request_line) != 3:
                    code, ctype, body = 400, "text/plain; charset=utf-8", b"400 bad request\n"
                    keep = False
                    body_out = body
                else:
                    method = request_line[0]
                    path = request_line[1].split(b"?", 1)[0].decode("latin-1")
                    code, ctype, body = await self._answer(method, path)
                    body_out = b"" if method == b"HEAD" else body
                reason = {
                    200: "OK",
                    400: "Bad Request",
                    404: "Not Found",
                    405: "Method Not Allowed",
                    503: "Service Unavailable",
                }[code]
                head_out = (
                    f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                    + ("" if keep else "Connection: close\r\n")
                    + "\r\n"
                ).encode("latin-1")
                writer.write(head_out + body_out)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, method: bytes, path: str) -> tuple[int, str, bytes]:
        """(code, content type, body) for a request: a coroutine, so that a subclass can fetch
        its answers (`proxy_process`: from the proxy's own process)."""
        return self._response(method, path)

    def _response(self, method: bytes, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in (b"GET", b"HEAD"):
            return 405, text, b"405 method not allowed\n"
        if path == "/metrics":
            return 200, self._metrics.content_type, self._metrics.render()
        if path == "/stats" or path == "/stats/":
            return 200, "application/json", json.dumps(self._stats(None)).encode()
        if path.startswith("/stats/"):
            name = path[len("/stats/") :]
            try:
                data = self._stats(name)
            except KeyError:
                return 404, text, f'404 no service "{name}" in the proxy\n'.encode()
            return 200, "application/json", json.dumps(data).encode()
        if path in ("/healthz", "/"):
            return 200, text, b"ok\n"
        return 404, text, b"404 not found\n"
