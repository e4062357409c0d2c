"""Metric validation (b.3) and the dryRun / measurementRetention rule matching.

Covers: every validation rule with its exact detail, the `metrics[i]:` prefix, valid metrics
that must pass (including Argo-valid providers we cannot run), regex rules that match
nothing or do not compile, and retention limits (last match wins, 0 ignored).
"""

from __future__ import annotations

from typing import Any

import pytest

from rollouts.analysis.errors import AnalysisSpecError
from rollouts.analysis.validate import (
    dry_run_metric_names,
    measurement_retention_limits,
    provider_kinds,
    validate_metrics,
)
from rollouts.model.analysis import Metric
from rollouts.model.rollout import DryRun, MeasurementRetention

WEB = {"web": {"url": "http://example.test"}}


def metric(name: str = "m", provider: dict[str, Any] | None = None, **fields: Any) -> Metric:
    return Metric(name=name, provider=WEB if provider is None else provider, **fields)


@pytest.mark.parametrize(
    "metrics",
    [
        pytest.param([metric()], id="minimal"),
        pytest.param([metric(interval="1m", count=5, failure_limit=2, inconclusive_limit=3)], id="limits"),
        pytest.param([metric(interval="30s")], id="unbounded"),
        pytest.param([metric(count=1)], id="count-one-without-interval"),
        pytest.param([metric(failure_limit=-1, consecutive_success_limit=2)], id="only-consecutive-success"),
        pytest.param(
            [metric(interval="1m", count=5, failure_limit=2, consecutive_success_limit=3)], id="count-equals-sum"
        ),
        pytest.param([metric(interval="1m", count=3, failure_limit=-1, consecutive_success_limit=3)], id="fl-disabled"),
        pytest.param([metric(initial_delay="1m30s")], id="initial-delay"),
        pytest.param([metric(count="5", interval="1m", failure_limit="2")], id="string-ints"),
        pytest.param([metric(consecutive_error_limit=0)], id="error-limit-zero"),
        pytest.param([metric(provider={"datadog": {"query": "x"}})], id="argo-provider-we-do-not-run"),
        pytest.param([metric(provider={"plugin": {"org/p": {}}})], id="one-plugin"),
        pytest.param([metric("a"), metric("b")], id="two-metrics"),
    ],
)
def test_valid(metrics: list[Metric]) -> None:
    validate_metrics(metrics)


@pytest.mark.parametrize(
    ("metrics", "detail"),
    [
        pytest.param([], "no metrics specified", id="no-metrics"),
        pytest.param([metric("a"), metric("a")], "metrics[1]: duplicate name 'a'", id="duplicate-name"),
        pytest.param(
            [metric(failure_limit=-2)], "metrics[0]: failureLimit must be >= -1 (-1 disables it)", id="failure-limit"
        ),
        pytest.param(
            [metric(consecutive_success_limit=-1)],
            "metrics[0]: consecutiveSuccessLimit must be >= 0 (0 disables it)",
            id="consecutive-success-limit",
        ),
        pytest.param(
            [metric(failure_limit=-1)],
            "metrics[0]: failureLimit and consecutiveSuccessLimit cannot both be disabled: "
            "set failureLimit >= 0 or consecutiveSuccessLimit > 0",
            id="both-disabled",
        ),
        pytest.param(
            [metric(inconclusive_limit=-1)], "metrics[0]: inconclusiveLimit must be >= 0", id="inconclusive-limit"
        ),
        pytest.param(
            [metric(consecutive_error_limit=-1)],
            "metrics[0]: consecutiveErrorLimit must be >= 0",
            id="consecutive-error-limit",
        ),
        pytest.param(
            [metric(interval="1m", count=2, failure_limit=3)],
            "metrics[0]: count must be >= failureLimit",
            id="count-below-failure-limit",
        ),
        pytest.param(
            [metric(interval="1m", count=4, failure_limit=2, consecutive_success_limit=3)],
            "metrics[0]: count must be >= failureLimit + consecutiveSuccessLimit",
            id="count-below-sum",
        ),
        pytest.param(
            [metric(interval="1m", count=2, failure_limit=-1, consecutive_success_limit=3)],
            "metrics[0]: count must be >= consecutiveSuccessLimit",
            id="count-below-consecutive-success",
        ),
        pytest.param(
            [metric(interval="1m", count=2, inconclusive_limit=3)],
            "metrics[0]: count must be >= inconclusiveLimit",
            id="count-below-inconclusive-limit",
        ),
        pytest.param(
            [metric(count=2)], "metrics[0]: interval must be specified when count > 1", id="count-needs-interval"
        ),
        pytest.param(
            [metric(interval="5 minutes")],
            "metrics[0]: invalid interval string: invalid duration '5 minutes'",
            id="bad-interval",
        ),
        pytest.param([metric(interval="0s")], "metrics[0]: interval must be positive, got '0s'", id="zero-interval"),
        pytest.param(
            [metric(initial_delay="soon")],
            "metrics[0]: invalid initialDelay string: invalid duration 'soon'",
            id="bad-initial-delay",
        ),
        pytest.param([metric(provider={})], "metrics[0]: no provider specified", id="no-provider"),
        pytest.param([metric(provider={"web": None})], "metrics[0]: no provider specified", id="null-provider-block"),
        pytest.param(
            [metric(provider={"web": {}, "prometheus": {}})],
            "metrics[0]: multiple providers specified (web, prometheus): keep exactly one",
            id="two-providers",
        ),
        pytest.param(
            [metric(provider={"plugin": {"a/x": {}, "b/y": {}}})],
            "metrics[0]: multiple providers specified (plugin a/x, plugin b/y): keep exactly one",
            id="two-plugins",
        ),
        pytest.param(
            [metric("ok"), metric("bad", count="three")],
            "metrics[1]: count must be an integer, got 'three'",
            id="count-not-int",
        ),
        pytest.param(
            [metric(failure_limit="{{args.x}}")],
            "metrics[0]: failureLimit must be an integer, got '{{args.x}}'",
            id="unsubstituted-limit",
        ),
        pytest.param([metric(count=-1)], "metrics[0]: count must be >= 0", id="negative-count"),
    ],
)
def test_invalid(metrics: list[Metric], detail: str) -> None:
    with pytest.raises(AnalysisSpecError) as info:
        validate_metrics(metrics)
    assert str(info.value).startswith(detail)


def test_provider_kinds() -> None:
    assert provider_kinds(metric(provider={"prometheus": {"query": "up"}})) == ["prometheus"]


METRICS = [metric("success-rate"), metric("error-rate"), metric("latency-p99")]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param([], set(), id="none"),
        pytest.param([".*"], {"success-rate", "error-rate", "latency-p99"}, id="all"),
        pytest.param(["rate"], {"success-rate", "error-rate"}, id="unanchored"),
        pytest.param(["^latency", "error-rate"], {"latency-p99", "error-rate"}, id="several"),
    ],
)
def test_dry_run_metric_names(rules: list[str], expected: set[str]) -> None:
    assert dry_run_metric_names([DryRun(metric_name=r) for r in rules], METRICS) == expected


@pytest.mark.parametrize(
    ("rules", "detail"),
    [
        pytest.param(["rate", "nothing"], "dryRun[1]: Rule didn't match any metric name(s)", id="no-match"),
        pytest.param(["("], "dryRun[0]: invalid regular expression '('", id="bad-regex"),
    ],
)
def test_dry_run_rule_errors(rules: list[str], detail: str) -> None:
    with pytest.raises(AnalysisSpecError) as info:
        dry_run_metric_names([DryRun(metric_name=r) for r in rules], METRICS)
    assert str(info.value).startswith(detail)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param([], {}, id="none"),
        pytest.param([(".*", 20)], {"success-rate": 20, "error-rate": 20, "latency-p99": 20}, id="all"),
        pytest.param([(".*", 20), ("latency", 3)], {"success-rate": 20, "error-rate": 20, "latency-p99": 3}, id="last"),
        pytest.param([("latency", 0)], {}, id="zero-keeps-default"),
    ],
)
def test_measurement_retention_limits(rules: list[tuple[str, int]], expected: dict[str, int]) -> None:
    retention = [MeasurementRetention(metric_name=name, limit=limit) for name, limit in rules]
    assert measurement_retention_limits(retention, METRICS) == expected


def test_measurement_retention_rule_without_match() -> None:
    with pytest.raises(AnalysisSpecError, match=r"^measurementRetention\[0\]: Rule didn't match any metric name"):
        measurement_retention_limits([MeasurementRetention(metric_name="cpu", limit=5)], METRICS)
