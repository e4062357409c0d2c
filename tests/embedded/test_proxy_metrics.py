"""Proxy metrics and the `/stats` sliding window, without sockets."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from rollouts.platform.embedded.proxy_metrics import ProxyMetrics


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_prometheus_series() -> None:
    m = ProxyMetrics()
    rs = m.revision("demo", "6f9c")
    rs.start()
    rs.finish(200, 0.003)
    rs.start()
    rs.finish(503, 0.2)
    rs.start()  # one still in flight
    rs.upstream_error("connect_refused")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(m.render().decode())
        for s in fam.samples
    }
    base = (("revision", "6f9c"), ("service", "demo"))
    assert samples[("rollouts_proxy_requests_total", (("code", "200"), *base))] == 1
    assert samples[("rollouts_proxy_requests_total", (("code", "503"), *base))] == 1
    assert samples[("rollouts_proxy_requests_in_flight", base)] == 1
    assert samples[("rollouts_proxy_upstream_errors_total", (("reason", "connect_refused"), *base))] == 1
    bucket = "rollouts_proxy_request_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.001"), *base))] == 0
    assert samples[(bucket, (("le", "0.005"), *base))] == 1
    assert samples[(bucket, (("le", "0.25"), *base))] == 2
    assert samples[(bucket, (("le", "+Inf"), *base))] == 2
    assert samples[("rollouts_proxy_request_duration_seconds_count", base)] == 2
    assert abs(samples[("rollouts_proxy_request_duration_seconds_sum", base)] - 0.203) < 1e-9


def test_own_registry_per_instance() -> None:
    a, b = ProxyMetrics(), ProxyMetrics()
    a.revision("svc", "r").record(200, 0.01)
    assert a.registry is not b.registry
    assert b"rollouts_proxy_requests_total{" in a.render()
    assert b"rollouts_proxy_requests_total{" not in b.render()
    assert REGISTRY.get_sample_value("rollouts_proxy_requests_total") is None


def test_window_counts_the_last_30_seconds() -> None:
    clock = FakeClock()
    m = ProxyMetrics(clock=clock)
    rs = m.revision("demo", "r1")
    for i in range(100):
        rs.record(500 if i % 10 == 0 else 200, 0.010)
    clock.now += 20
    for _ in range(50):
        rs.record(200, 0.010)
    s = rs.summary()
    assert s["requests"] == 150 and s["errors"] == 10
    assert s["window_seconds"] == 30
    assert s["window_requests"] == 150 and s["window_errors"] == 10
    assert abs(s["error_rate"] - 10 / 150) < 1e-12
    clock.now += 15  # the first batch is now 35 s old
    s = rs.summary()
    assert s["window_requests"] == 50 and s["window_errors"] == 0 and s["error_rate"] == 0.0
    assert s["requests"] == 150  # totals never slide
    clock.now += 60
    s = rs.summary()
    assert s["window_requests"] == 0 and s["error_rate"] == 0.0 and s["p95_latency_seconds"] == 0.0


def test_window_p95_is_close() -> None:
    clock = FakeClock()
    m = ProxyMetrics(clock=clock)
    rs = m.revision("demo", "r1")
    # 1..1000 ms, spread over 10 seconds: p95 = 950 ms
    for i in range(1, 1001):
        rs.record(200, i / 1000)
        if i % 100 == 0:
            clock.now += 1
    p95 = rs.summary()["p95_latency_seconds"]
    assert abs(p95 - 0.95) / 0.95 < 0.06
    other = m.revision("demo", "r2")
    for _ in range(20):
        other.record(200, 0.002)
    assert abs(other.summary()["p95_latency_seconds"] - 0.002) / 0.002 < 0.11


def test_slots_are_reused_after_wrapping() -> None:
    clock = FakeClock(0.0)
    m = ProxyMetrics(window_seconds=5, clock=clock)
    rs = m.revision("s", "r")
    for _ in range(12):  # more seconds than slots: old slots get recycled
        rs.record(200, 0.001)
        clock.now += 1
    clock.now -= 1
    assert rs.summary()["window_requests"] == 5
    assert m.revisions_of("s") == {"r": rs}
    m.forget_service("s")
    assert m.revisions_of("s") == {}


def test_batched_counting_equals_one_by_one() -> None:
    """`drain` (the proxy's way: requests counted in batches) gives exactly what `record` gives
    request by request: codes, errors, latency buckets (bounds, negatives, beyond the last
    bound), the sum, and the window's per-second slots across several seconds."""
    from rollouts.platform.embedded import proxy_metrics

    bounds = proxy_metrics._FINE_BOUNDS
    durations = [-0.5, 0.0, 0.00005, bounds[0], bounds[3], bounds[3] * 1.0001, 0.001, 0.0025, 0.0031, 0.2, 10.0, 500.0]
    entries = []
    t = 5000.2
    for i in range(400):
        code = (200, 200, 404, 503, 200, 500)[i % 6]
        entries.append((code, durations[(i * 7) % len(durations)], t))
        t += 0.013 if i % 50 else 1.7  # several seconds, and a gap
    one = ProxyMetrics(window_seconds=30).revision("s", "one")
    batched = ProxyMetrics(window_seconds=30).revision("s", "batched")
    assert batched.pending is not None  # (the real clock: counted in batches)
    for code, duration, now in entries:
        one.record(code, duration, now)
    batched.pending.extend(entries[:150])
    batched.drain()
    batched.pending.extend(entries[150:])
    batched.drain()
    assert batched.codes == one.codes and batched.requests == one.requests == 400
    assert batched.errors == one.errors
    assert batched.duration_buckets == one.duration_buckets
    assert abs(batched.duration_sum - one.duration_sum) < 1e-9
    assert batched.window._stamps == one.window._stamps
    assert batched.window._errors == one.window._errors
    assert batched.window._hists == one.window._hists
