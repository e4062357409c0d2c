"""The async AnalysisRun runner, driven through several reconciles with a fake clock.

Covers: a run to Successful (count reached), Failed (failureLimit), Error (consecutive
provider errors retried every 10 s), terminate (with and without results), an early
failure ending an unbounded metric, dry-run metrics, measurement retention, secrets passed to
the provider but redacted from status, unsupported providers, provider bugs, condition
errors, run-level errors (args, secrets, validation, rules), parallel measurement, in-flight
measurements, idle reconciles that change nothing, and completed runs left untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollouts.analysis.providers.base import MetricProvider, ProviderError, ProviderResult
from rollouts.analysis.runner import RunOutcome, reconcile_run, ttl_expired
from rollouts.core.timeutil import to_rfc3339
from rollouts.model.analysis import AnalysisRun, Measurement, MetricResult, RunSummary

T0 = datetime(2026, 11, 26, 5, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


Script = ProviderResult | BaseException


class FakeProvider:
    """Returns (or raises) scripted outcomes in order; records every call."""

    def __init__(self, kind: str, *script: Script) -> None:
        self.kind = kind
        self.script = list(script)
        self.calls: list[tuple[dict[str, Any], datetime]] = []

    async def measure(
        self, spec: dict[str, Any], *, now: datetime, context: Mapping[str, str] | None = None
    ) -> ProviderResult:
        self.calls.append((spec, now))
        outcome = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def value(v: float | list[float]) -> ProviderResult:
    text = str(v) if not isinstance(v, list) else "[" + ",".join(str(x) for x in v) + "]"
    return ProviderResult(value=v, text=text, metadata={"ResolvedPrometheusQuery": "up"})


def make_run(*metrics: dict[str, Any], **spec: Any) -> AnalysisRun:
    return AnalysisRun.model_validate(
        {
            "metadata": {"name": "guestbook-abc-2-1", "namespace": "shop"},
            "spec": {"metrics": list(metrics), **spec},
        }
    )


def prom(name: str = "success-rate", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "successCondition": "result > 0.9",
        "provider": {"prometheus": {"address": "http://prom:9090", "query": "up"}},
        **fields,
    }


async def reconcile(run: AnalysisRun, clock: Clock, *providers: FakeProvider, **kw: Any) -> RunOutcome:
    by_kind: dict[str, MetricProvider] = {p.kind: p for p in providers}
    by_kind.setdefault("web", FakeProvider("web", value(1.0)))
    by_kind.setdefault("prometheus", FakeProvider("prometheus", value(1.0)))
    return await reconcile_run(run, providers=by_kind, now=clock, **kw)


async def drive(
    run: AnalysisRun, clock: Clock, *providers: FakeProvider, limit: int = 20, **kw: Any
) -> list[RunOutcome]:
    """Reconcile at each `next_at` until the run completes."""
    outcomes: list[RunOutcome] = []
    for _ in range(limit):
        outcome = await reconcile(run, clock, *providers, **kw)
        outcomes.append(outcome)
        run = outcome.run
        if outcome.next_at is None:
            return outcomes
        clock.now = max(clock.now, outcome.next_at)
    raise AssertionError(f"run did not complete in {limit} reconciles")


def status_of(outcome: RunOutcome) -> Any:
    assert outcome.run.status is not None
    return outcome.run.status


def only_result(outcome: RunOutcome) -> MetricResult:
    results = status_of(outcome).metric_results
    assert results is not None and len(results) == 1
    result: MetricResult = results[0]
    return result


async def test_run_to_successful() -> None:
    clock = Clock()
    provider = FakeProvider("prometheus", value(0.99), value(0.95), value(1.0))
    run = make_run(
        prom(interval="1m", count=3, provider={"prometheus": {"query": "rate{{args.svc}}"}}),
        args=[{"name": "svc", "value": "api"}],
    )
    outcomes = await drive(run, clock, provider)

    assert [status_of(o).phase for o in outcomes] == ["Running", "Running", "Successful"]
    assert [o.next_at for o in outcomes] == [at(60), at(120), None]
    assert [call[0] for call in provider.calls] == [{"query": "rateapi"}] * 3
    assert [call[1] for call in provider.calls] == [at(0), at(60), at(120)]
    final = status_of(outcomes[-1])
    assert final.started_at == "2026-11-26T05:00:00Z"
    assert final.completed_at == "2026-11-26T05:02:00Z"
    assert final.message is None
    assert final.run_summary == RunSummary(count=1, successful=1, failed=0, inconclusive=0, error=0)
    assert final.dry_run_summary == RunSummary(count=0, successful=0, failed=0, inconclusive=0, error=0)
    result = only_result(outcomes[-1])
    assert (result.phase, result.count, result.successful, result.consecutive_success) == ("Successful", 3, 3, 3)
    assert result.metadata == {"ResolvedPrometheusQuery": "up"}
    assert result.dry_run is None
    assert result.measurements is not None
    assert [m.value for m in result.measurements] == ["0.99", "0.95", "1.0"]
    assert result.measurements[1] == Measurement(
        phase="Successful", started_at="2026-11-26T05:01:00Z", finished_at="2026-11-26T05:01:00Z", value="0.95"
    )
    assert all(o.changed for o in outcomes)


async def test_idle_reconcile_changes_nothing() -> None:
    clock = Clock()
    first = await reconcile(make_run(prom(interval="1m")), clock)
    clock.now = at(30)
    idle = await reconcile(first.run, clock)
    assert not idle.changed
    assert idle.next_at == at(60)
    assert idle.run == first.run


async def test_completed_run_untouched() -> None:
    clock = Clock()
    done = (await drive(make_run(prom()), clock))[-1]
    assert status_of(done).phase == "Successful"
    provider = FakeProvider("prometheus", value(0.0))
    again = await reconcile(done.run, clock, provider)
    assert again == RunOutcome(run=done.run, next_at=None, changed=False)
    assert provider.calls == []


async def test_run_to_failed_with_failure_limit() -> None:
    clock = Clock()
    provider = FakeProvider("prometheus", value(0.99), value(0.1), value(0.2), value(1.0))
    outcomes = await drive(make_run(prom(interval="30s", failureLimit=1)), clock, provider)
    assert [status_of(o).phase for o in outcomes] == ["Running", "Running", "Failed"]
    final = status_of(outcomes[-1])
    assert final.message == 'Metric "success-rate" assessed Failed due to failed (2) > failureLimit (1)'
    assert final.completed_at == "2026-11-26T05:01:00Z"
    assert final.run_summary == RunSummary(count=1, successful=0, failed=1, inconclusive=0, error=0)
    result = only_result(outcomes[-1])
    assert (result.phase, result.count, result.failed, result.successful) == ("Failed", 3, 2, 1)


async def test_run_to_error_after_consecutive_provider_errors() -> None:
    clock = Clock()
    provider = FakeProvider("prometheus", ProviderError("GET http://prom:9090/api/v1/query: connection refused"))
    outcomes = await drive(make_run(prom(interval="5m", consecutiveErrorLimit=2)), clock, provider)
    assert [status_of(o).phase for o in outcomes] == ["Running", "Running", "Error"]
    assert [call[1] for call in provider.calls] == [at(0), at(10), at(20)]  # fixed 10 s retry
    assert [o.next_at for o in outcomes] == [at(10), at(20), None]
    result = only_result(outcomes[-1])
    assert (result.phase, result.count, result.error, result.consecutive_error) == ("Error", 0, 3, 3)
    assert result.message == "GET http://prom:9090/api/v1/query: connection refused"
    assert status_of(outcomes[-1]).message == (
        'Metric "success-rate" assessed Error due to consecutiveErrors (3) > consecutiveErrorLimit (2): '
        '"Error Message: GET http://prom:9090/api/v1/query: connection refused"'
    )


async def test_error_then_recovery_resets_consecutive_errors() -> None:
    clock = Clock()
    provider = FakeProvider("prometheus", ProviderError("timeout"), value(0.99))
    outcomes = await drive(make_run(prom()), clock, provider)
    assert [status_of(o).phase for o in outcomes] == ["Running", "Successful"]
    result = only_result(outcomes[-1])
    assert (result.count, result.error, result.consecutive_error, result.successful) == (1, 1, 0, 1)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        pytest.param(RuntimeError("provider bug"), "provider bug", id="runtime-error"),
        pytest.param(KeyError("address"), "'address'", id="key-error"),
        pytest.param(ValueError(), "ValueError", id="empty-message-uses-type"),
    ],
)
async def test_any_provider_exception_is_error_measurement(error: Exception, message: str) -> None:
    outcome = await reconcile(make_run(prom()), Clock(), FakeProvider("prometheus", error))
    result = only_result(outcome)
    assert result.measurements is not None
    assert (result.measurements[0].phase, result.measurements[0].message) == ("Error", message)
    assert status_of(outcome).phase == "Running"
    assert outcome.next_at == at(10)


async def test_condition_error_is_error_measurement() -> None:
    outcome = await reconcile(
        make_run(prom(successCondition="result[0] > 1")), Clock(), FakeProvider("prometheus", value([]))
    )
    measurement = (only_result(outcome).measurements or [])[0]
    assert measurement.phase == "Error"
    assert measurement.value == "[]"
    assert measurement.message is not None
    assert measurement.message.startswith('successCondition "result[0] > 1" failed: ')
    assert measurement.message.endswith("the metric result is nil or empty")


async def test_unsupported_provider() -> None:
    run = make_run(prom("dd", provider={"datadog": {"query": "avg:x"}}))
    outcome = await reconcile(run, Clock())
    measurement = (only_result(outcome).measurements or [])[0]
    assert (measurement.phase, measurement.message) == (
        "Error",
        "provider datadog is not supported here: supported are prometheus, web",
    )


async def test_terminate_ends_unbounded_metric() -> None:
    clock = Clock()
    provider = FakeProvider("prometheus", value(1.0))
    first = await reconcile(make_run(prom(interval="1m")), clock, provider)
    assert status_of(first).phase == "Running"
    terminated = first.run.model_copy(deep=True)
    terminated.spec.terminate = True
    clock.now = at(90)
    outcome = await reconcile(terminated, clock, provider)
    assert len(provider.calls) == 1  # no new measurement once terminating
    assert (status_of(outcome).phase, status_of(outcome).message) == ("Successful", "Run Terminated")
    assert only_result(outcome).phase == "Successful"
    assert outcome.next_at is None
    assert status_of(outcome).completed_at == "2026-11-26T05:01:30Z"


async def test_terminate_before_first_measurement() -> None:
    outcome = await reconcile(make_run(prom(initialDelay="5m"), terminate=True), Clock())
    status = status_of(outcome)
    assert (status.phase, status.message, status.metric_results) == ("Successful", "Run Terminated", None)


async def test_initial_delay_then_measure() -> None:
    clock = Clock()
    provider = FakeProvider("prometheus", value(1.0))
    outcomes = await drive(make_run(prom(initialDelay="2m")), clock, provider)
    assert [o.next_at for o in outcomes] == [at(120), None]
    assert [call[1] for call in provider.calls] == [at(120)]


async def test_failed_metric_ends_other_metrics_in_same_reconcile() -> None:
    clock = Clock()
    run = make_run(
        prom("latency", interval="1m", provider={"web": {"url": "http://svc/latency"}}),
        prom("errors", interval="1m", successCondition="result < 0.01"),
    )
    outcome = await reconcile(run, clock, FakeProvider("web", value(1.0)), FakeProvider("prometheus", value(0.5)))
    status = status_of(outcome)
    assert status.phase == "Failed"
    assert status.message == 'Metric "errors" assessed Failed due to failed (1) > failureLimit (0)'
    assert [(r.name, r.phase) for r in status.metric_results] == [("latency", "Successful"), ("errors", "Failed")]
    assert outcome.next_at is None


async def test_dry_run_metric_does_not_fail_run() -> None:
    clock = Clock()
    run = make_run(
        prom("real"),
        prom("experimental", successCondition="result > 2"),
        dryRun=[{"metricName": "exp.*"}],
    )
    outcome = await reconcile(run, clock, FakeProvider("prometheus", value(1.0)))
    status = status_of(outcome)
    assert (status.phase, status.message) == ("Successful", None)
    experimental = status.metric_results[1]
    assert (experimental.phase, experimental.dry_run) == ("Failed", True)
    assert experimental.message == "Metric assessed Failed due to failed (1) > failureLimit (0)"
    assert status.run_summary == RunSummary(count=1, successful=1, failed=0, inconclusive=0, error=0)
    assert status.dry_run_summary == RunSummary(count=1, successful=0, failed=1, inconclusive=0, error=0)


async def test_measurement_retention() -> None:
    clock = Clock()
    run = make_run(prom(interval="10s", count=5), measurementRetention=[{"metricName": ".*", "limit": 2}])
    outcomes = await drive(run, clock, FakeProvider("prometheus", value(1.0)))
    result = only_result(outcomes[-1])
    assert (result.phase, result.count) == ("Successful", 5)
    assert [m.started_at for m in result.measurements or []] == [to_rfc3339(at(30)), to_rfc3339(at(40))]


async def test_secrets_reach_provider_but_are_redacted() -> None:
    lookups: list[tuple[str, str, str]] = []

    def secrets(namespace: str, name: str, key: str) -> str | None:
        lookups.append((namespace, name, key))
        return "s3cret"

    provider = FakeProvider(
        "web",
        ProviderResult(value=1.0, text="token=s3cret", metadata={"url": "http://svc/?t=s3cret"}),
        ProviderError("401 Unauthorized from http://svc/?t=s3cret"),
    )
    run = make_run(
        {
            "name": "api",
            "interval": "1m",
            "successCondition": "result > 0.5",
            "provider": {"web": {"url": "http://svc/?t={{args.token}}"}},
        },
        args=[{"name": "token", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
    )
    clock = Clock()
    first = await reconcile(run, clock, provider, secrets=secrets)
    clock.now = at(60)
    second = await reconcile(first.run, clock, provider, secrets=secrets)

    assert lookups == [("shop", "creds", "token")] * 2
    assert [call[0] for call in provider.calls] == [{"url": "http://svc/?t=s3cret"}] * 2
    result = only_result(second)
    assert result.metadata == {"url": "http://svc/?t=*****"}
    assert [(m.value, m.message) for m in result.measurements or []] == [
        ("token=*****", None),
        (None, "401 Unauthorized from http://svc/?t=*****"),
    ]
    assert "s3cret" not in str(second.run.to_json())


@pytest.mark.parametrize(
    ("run", "message"),
    [
        pytest.param(
            make_run(prom(provider={"web": {"url": "http://{{args.nope}}/"}})),
            "Unable to resolve metric arguments: failed to resolve {{args.nope}}",
            id="unknown-arg",
        ),
        pytest.param(
            make_run(prom(), args=[{"name": "t", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]),
            "Unable to resolve metric arguments: args.t: key 'k' does not exist in secret 'creds'",
            id="missing-secret",
        ),
        pytest.param(
            make_run(prom(count=3)),
            "Analysis spec invalid: metrics[0]: interval must be specified when count > 1",
            id="invalid-metric",
        ),
        pytest.param(
            make_run(prom(count="{{args.count}}", interval="1m"), args=[{"name": "count", "value": "x"}]),
            "Analysis spec invalid: metrics[0]: count must be an integer, got 'x'",
            id="invalid-after-substitution",
        ),
        pytest.param(make_run(), "Analysis spec invalid: no metrics specified", id="no-metrics"),
        pytest.param(
            make_run(prom(), dryRun=[{"metricName": "nothing"}]),
            "Analysis spec invalid: dryRun[0]: Rule didn't match any metric name(s)",
            id="dry-run-rule",
        ),
        pytest.param(
            make_run(prom(), measurementRetention=[{"metricName": "[", "limit": 3}]),
            "Analysis spec invalid: measurementRetention[0]: invalid regular expression '['",
            id="retention-regex",
        ),
    ],
)
async def test_run_level_errors(run: AnalysisRun, message: str) -> None:
    provider = FakeProvider("prometheus", value(1.0))
    outcome = await reconcile(run, Clock(), provider)
    status = status_of(outcome)
    assert status.phase == "Error"
    assert status.message.startswith(message)
    assert (status.started_at, status.completed_at) == ("2026-11-26T05:00:00Z", "2026-11-26T05:00:00Z")
    assert outcome.next_at is None and outcome.changed
    assert provider.calls == []


async def test_secret_in_validation_message_is_redacted() -> None:
    run = make_run(
        prom(count="{{args.n}}", interval="1m"),
        args=[{"name": "n", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "n"}}}],
    )
    outcome = await reconcile(run, Clock(), secrets=lambda ns, n, k: "hunter2")
    assert status_of(outcome).message == "Analysis spec invalid: metrics[0]: count must be an integer, got '*****'"


async def test_templated_interval() -> None:
    clock = Clock()
    run = make_run(prom(interval="{{args.every}}", count=2), args=[{"name": "every", "value": "45s"}])
    outcomes = await drive(run, clock, FakeProvider("prometheus", value(1.0)))
    assert [o.next_at for o in outcomes] == [at(45), None]


async def test_metrics_measured_in_parallel() -> None:
    barrier = asyncio.Barrier(2)

    class Waiting(FakeProvider):
        async def measure(
            self, spec: dict[str, Any], *, now: datetime, context: Mapping[str, str] | None = None
        ) -> ProviderResult:
            await asyncio.wait_for(barrier.wait(), timeout=2)
            return await super().measure(spec, now=now)

    run = make_run(prom("a"), prom("b", provider={"web": {"url": "http://svc"}}))
    outcome = await reconcile(run, Clock(), Waiting("prometheus", value(1.0)), Waiting("web", value(1.0)))
    assert status_of(outcome).phase == "Successful"


def in_flight_run(terminate: bool) -> AnalysisRun:
    body = make_run(prom(interval="1m"), terminate=terminate).to_json()
    body["status"] = {
        "phase": "Running",
        "startedAt": "2026-11-26T05:00:00Z",
        "metricResults": [
            {
                "name": "success-rate",
                "phase": "Running",
                "measurements": [{"phase": "Running", "startedAt": "2026-11-26T05:00:00Z"}],
            }
        ],
    }
    return AnalysisRun.model_validate(body)


@pytest.mark.parametrize(
    ("terminate", "expected"),
    [
        pytest.param(False, ("Successful", None, "1.0"), id="resumed-by-remeasuring"),
        pytest.param(True, ("Successful", "Metric Terminated", None), id="ended-when-terminating"),
    ],
)
async def test_in_flight_measurement(terminate: bool, expected: tuple[str, str | None, str | None]) -> None:
    clock = Clock(at(5))
    outcome = await reconcile(in_flight_run(terminate), clock, FakeProvider("prometheus", value(1.0)))
    measurements = only_result(outcome).measurements or []
    assert len(measurements) == 1
    assert (measurements[0].phase, measurements[0].message, measurements[0].value) == expected
    assert measurements[0].finished_at == "2026-11-26T05:00:05Z"


def test_ttl_expired_exported() -> None:
    run = make_run(prom(), ttlStrategy={"secondsAfterCompletion": 60})
    run.status = None
    assert not ttl_expired(run, T0)
