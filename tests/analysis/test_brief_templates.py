"""The brief's six AnalysisTemplates (examples/analysis/) judged against a real Prometheus.

For each template a passing and a failing set of series (different label values: services
"good"/"bad", or different pod-template-hashes) is backfilled into this module's own
Prometheus with promtool, so the history is deterministic. Each case builds an AnalysisRun
from the template file with `build_analysis_run` (the args pick the series), then drives it
with `reconcile_run` and the real PrometheusProvider. The clock is injected: it starts inside
the history and jumps to each next due measurement, so the runs take all their measurements
(5 or 10) in milliseconds, with no sleeping.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from rollouts.analysis.assess import effective_count
from rollouts.analysis.build import build_analysis_run
from rollouts.analysis.providers import PrometheusProvider
from rollouts.analysis.runner import reconcile_run
from rollouts.model.analysis import COMPLETED_PHASES, AnalysisRunStatus, AnalysisTemplate, Argument
from tests.support.prometheus import PrometheusNotInstalled, PrometheusServer, Series

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "examples" / "analysis"

END = time.time()  # the history ends now (module import) ...
START = END - 3600.0  # ... and spans the hour before
T0 = datetime.fromtimestamp(END, UTC) - timedelta(minutes=15)  # the runs start inside it
STEP = 15.0


def _times() -> list[float]:
    count = int((END - START) // STEP)
    return [START + i * STEP for i in range(count + 1)]


def counter(name: str, labels: Mapping[str, str], per_second: float) -> Series:
    """A counter growing by `per_second` over the whole history."""
    return Series(name, dict(labels), [(t, per_second * (t - START)) for t in _times()])


def gauge(name: str, labels: Mapping[str, str], value: float) -> Series:
    return Series(name, dict(labels), [(t, value) for t in _times()])


def step_counter(name: str, labels: Mapping[str, str], *, at: float, to: float) -> Series:
    """A counter at 0 that jumps to `to` at time `at` (a single event)."""
    return Series(name, dict(labels), [(t, to if t >= at else 0.0) for t in _times()])


def histogram(name: str, labels: Mapping[str, str], cumulative: Mapping[str, float]) -> list[Series]:
    """`<name>_bucket` counters: `cumulative[le]` observations per second at or below `le`."""
    return [counter(f"{name}_bucket", {**labels, "le": le}, rate) for le, rate in cumulative.items()]


REQUESTS = "rollouts_proxy_requests_total"
DURATION = "rollouts_proxy_request_duration_seconds"


def series() -> list[Series]:
    out: list[Series] = []
    # success-rate: 0.5 % of "good"'s requests fail, 4.8 % of "bad"'s.
    for service, errors in (("good", 0.05), ("bad", 0.5)):
        out.append(counter(REQUESTS, {"service": service, "revision": "sr1", "code": "200"}, 10))
        out.append(counter(REQUESTS, {"service": service, "revision": "sr1", "code": "503"}, errors))
    # latency: p95 ≈ 194 ms for "good", ≈ 2.1 s for "bad".
    out += histogram(
        DURATION,
        {"service": "good", "revision": "lt1"},
        {"0.1": 9, "0.25": 9.8, "0.5": 10, "1": 10, "2.5": 10, "+Inf": 10},
    )
    out += histogram(
        DURATION,
        {"service": "bad", "revision": "lt1"},
        {"0.1": 2, "0.25": 4, "0.5": 6, "1": 8, "2.5": 10, "+Inf": 10},
    )
    # genai: stable spends 50 tokens per request; canary "genaigood" 55 (+10 %), "genaibad" 75 (+50 %).
    for revision, tokens, requests in (("genaistable", 500, 10), ("genaigood", 55, 1), ("genaibad", 75, 1)):
        out.append(counter("genai_tokens_total", {"rollouts_pod_template_hash": revision}, tokens))
        out.append(counter(REQUESTS, {"service": "q2q", "revision": revision, "code": "200"}, requests))
    # gdpr: "gdprgood" never violates; "gdprbad" had exactly one violation 10 minutes before the run.
    violations = "gdpr_data_residency_violations_total"
    out.append(gauge(violations, {"rollouts_pod_template_hash": "gdprgood"}, 0))
    out.append(step_counter(violations, {"rollouts_pod_template_hash": "gdprbad"}, at=END - 25 * 60, to=1))
    # q2q quality: 0.85 for "good", 0.55 for "bad".
    out.append(gauge("q2q_ai_quality_score", {"service": "good"}, 0.85))
    out.append(gauge("q2q_ai_quality_score", {"service": "bad"}, 0.55))
    # clickhouse: p95 ≈ 0.97 s for "good", ≈ 4.6 s for "bad".
    out += histogram(
        "clickhouse_query_duration_seconds",
        {"service": "good"},
        {"0.5": 5, "1": 9.8, "2": 10, "5": 10, "+Inf": 10},
    )
    out += histogram(
        "clickhouse_query_duration_seconds",
        {"service": "bad"},
        {"0.5": 1, "1": 3, "2": 6, "5": 10, "+Inf": 10},
    )
    return out


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """This module's Prometheus, with `series()` queryable at once."""
    server = PrometheusServer(workdir=tmp_path_factory.mktemp("prometheus-brief"))
    try:
        try:
            server.backfill(series())
            server.start()
        except PrometheusNotInstalled as exc:
            pytest.fail(f"Prometheus is needed for these tests: {exc}", pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
async def provider() -> AsyncIterator[PrometheusProvider]:
    prometheus_provider = PrometheusProvider()
    try:
        yield prometheus_provider
    finally:
        await prometheus_provider.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Case:
    template: str
    args: dict[str, str]
    phase: str
    failed_because: str = ""  # the run message's reason when Failed


CASES = [
    pytest.param(Case("success-rate-analysis", {"service-name": "good"}, "Successful"), id="success-rate-pass"),
    pytest.param(
        Case("success-rate-analysis", {"service-name": "bad"}, "Failed", "failed (2) > failureLimit (1)"),
        id="success-rate-fail",
    ),
    pytest.param(Case("latency-analysis", {"service-name": "good"}, "Successful"), id="latency-pass"),
    pytest.param(
        Case("latency-analysis", {"service-name": "bad"}, "Failed", "failed (2) > failureLimit (1)"),
        id="latency-fail",
    ),
    pytest.param(
        Case("genai-token-analysis", {"stable-hash": "genaistable", "canary-hash": "genaigood"}, "Successful"),
        id="genai-token-pass",
    ),
    pytest.param(
        Case(
            "genai-token-analysis",
            {"stable-hash": "genaistable", "canary-hash": "genaibad"},
            "Failed",
            "failed (2) > failureLimit (1)",
        ),
        id="genai-token-fail",
    ),
    pytest.param(Case("gdpr-compliance-analysis", {"canary-hash": "gdprgood"}, "Successful"), id="gdpr-pass"),
    pytest.param(
        Case("gdpr-compliance-analysis", {"canary-hash": "gdprbad"}, "Failed", "failed (1) > failureLimit (0)"),
        id="gdpr-fail",
    ),
    pytest.param(Case("q2q-ai-quality-analysis", {"service-name": "good"}, "Successful"), id="q2q-quality-pass"),
    pytest.param(
        Case("q2q-ai-quality-analysis", {"service-name": "bad"}, "Failed", "failed (2) > failureLimit (1)"),
        id="q2q-quality-fail",
    ),
    pytest.param(Case("clickhouse-query-analysis", {"service-name": "good"}, "Successful"), id="clickhouse-pass"),
    pytest.param(
        Case("clickhouse-query-analysis", {"service-name": "bad"}, "Failed", "failed (2) > failureLimit (1)"),
        id="clickhouse-fail",
    ),
]


def load_template(name: str) -> AnalysisTemplate:
    return AnalysisTemplate.model_validate(yaml.safe_load((TEMPLATES / f"{name}.yaml").read_text()))


def test_every_template_file_is_covered() -> None:
    covered = {case.values[0].template for case in CASES if isinstance(case.values[0], Case)}
    assert covered == {path.stem for path in TEMPLATES.glob("*.yaml")}
    for name in covered:
        assert load_template(name).metadata.name == name


@pytest.mark.parametrize("case", CASES)
async def test_brief_template(prometheus: PrometheusServer, provider: PrometheusProvider, case: Case) -> None:
    template = load_template(case.template)
    args = [Argument(name=k, value=v) for k, v in {**case.args, "prometheus-address": prometheus.url}.items()]
    run = build_analysis_run(
        name=f"{case.template}-run", namespace="default", templates=[template], args=args, lookup=lambda ref: None
    )
    clock = Clock()
    status: AnalysisRunStatus | None = None
    for _ in range(30):
        outcome = await reconcile_run(run, providers={"prometheus": provider}, now=clock)
        run = outcome.run
        status = run.status
        assert status is not None
        if status.phase in COMPLETED_PHASES:
            break
        assert outcome.next_at is not None
        assert outcome.next_at > clock.now  # the clock moves past each interval
        clock.now = outcome.next_at
    assert status is not None and status.metric_results is not None
    result = status.metric_results[0]
    measurements = result.measurements or []
    seen = [(m.phase, m.value, m.message) for m in measurements]
    assert status.phase == case.phase, f"{status.message}; measurements: {seen}"
    assert all(m.phase in ("Successful", "Failed") for m in measurements), seen
    if case.phase == "Successful":
        assert len(measurements) == effective_count((template.spec.metrics or [])[0])  # every measurement taken
        assert status.message is None
    else:
        assert status.message == f'Metric "{result.name}" assessed Failed due to {case.failed_because}'
