"""`rollout_reconcile` and `rollout_events_total`: the cached families write exactly what
prometheus_client would, re-render only the label sets changed since the last scrape, and forget
rollouts that were deleted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from rollouts.controller.admin import ControllerMetrics
from rollouts.controller.cached_metrics import CachedCounter, CachedHistogram
from rollouts.store.protocol import AsyncSqliteStore
from rollouts.store.sqlite import SqliteStore

BUCKETS = (0.01, 0.15, 0.25, 0.5, 1.0)
_CREATED = re.compile(r"^(rollout_\w+_created\{[^}]*\}) .*$", re.M)


def masked(text: str) -> str:
    """The exposition with the `_created` timestamps (when each series began) blanked."""
    return _CREATED.sub(r"\1 T", text)


Observation = tuple[str, str, float]


@pytest.mark.parametrize(
    "observations",
    [
        pytest.param([], id="nothing-observed"),
        pytest.param([("default", "web", 0.002)], id="one"),
        pytest.param([("default", "web", v) for v in (0.01, 0.15, 0.25, 0.5, 1.0)], id="on-each-bound"),
        pytest.param([("default", "web", 0.0100001), ("default", "web", 7.5)], id="just-over-and-past-the-last"),
        pytest.param(
            [("default", "b", 0.3), ("ns2", "a", 0.02), ("default", "b", 0.001), ("default", "a", 2.0)],
            id="several-rollouts-in-first-seen-order",
        ),
        pytest.param([("team-a", 'we"ird\\name\n', 0.1)], id="escaped-label-values"),
    ],
)
def test_renders_what_prometheus_client_writes(observations: list[Observation]) -> None:
    registry = CollectorRegistry()
    reference = Histogram(
        "rollout_reconcile",
        "Rollout reconciliation performance.",
        ["namespace", "name"],
        buckets=BUCKETS,
        registry=registry,
    )
    ours = CachedHistogram("rollout_reconcile", "Rollout reconciliation performance.", ["namespace", "name"], BUCKETS)
    for namespace, name, seconds in observations:
        reference.labels(namespace, name).observe(seconds)
        ours.labels(namespace, name).observe(seconds)
    expected = masked(generate_latest(registry).decode())
    assert masked(ours.render()) == expected
    # Through prometheus_client (`collect`, for callers of `generate_latest`): the same text.
    own = CollectorRegistry()
    own.register(ours)
    assert masked(generate_latest(own).decode()) == expected


def test_a_scrape_re_renders_only_the_rollouts_observed_since_the_last_one() -> None:
    histogram = CachedHistogram(
        "rollout_reconcile", "Rollout reconciliation performance.", ["namespace", "name"], BUCKETS
    )
    for i in range(3):
        histogram.labels("default", f"ro{i}").observe(0.001)
    first = histogram.render()
    rendered: list[str] = []
    original = histogram._render_samples

    def counting(labels: str, series: Any) -> str:
        rendered.append(labels)
        return original(labels, series)

    histogram._render_samples = counting  # type: ignore[method-assign]
    assert histogram.render() == first and rendered == []
    histogram.labels("default", "ro1").observe(0.2)
    text = histogram.render()
    assert rendered == ['name="ro1",namespace="default"']
    assert 'rollout_reconcile_count{name="ro1",namespace="default"} 2.0' in text
    assert 'rollout_reconcile_bucket{le="0.15",name="ro1",namespace="default"} 1.0' in text
    assert 'rollout_reconcile_bucket{le="0.25",name="ro1",namespace="default"} 2.0' in text
    assert 'rollout_reconcile_count{name="ro2",namespace="default"} 1.0' in text


def test_deleted_rollouts_lose_their_reconcile_series(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    metrics = ControllerMetrics()
    metrics.watch_store(AsyncSqliteStore(store))
    for name in ("kept", "deleted"):
        store.create({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name}, "spec": {}})
        metrics.reconcile.labels("default", name).observe(0.003)
        metrics.reconcile_error.labels("default", name).inc()
        metrics.events.labels("default", name, "Normal", "RolloutUpdated").inc()
    text = metrics.render().decode()
    assert 'rollout_reconcile_count{name="deleted",namespace="default"} 1.0' in text
    assert 'rollout_reconcile_error_total{name="deleted",namespace="default"} 1.0' in text

    store.delete("Rollout", "deleted")
    metrics.reconcile.labels("default", "deleted").observe(0.001)  # the reconcile that collects its garbage
    text = metrics.render().decode()
    assert 'name="deleted"' not in text
    assert 'rollout_reconcile_count{name="kept",namespace="default"} 1.0' in text
    assert 'rollout_reconcile_error_total{name="kept",namespace="default"} 1.0' in text
    assert 'rollout_events_total{name="kept",namespace="default",reason="RolloutUpdated",type="Normal"} 1.0' in text
    # One family header each, whatever rendered it.
    assert text.count("# TYPE rollout_reconcile histogram") == 1
    assert text.count("# TYPE rollout_reconcile_created gauge") == 1
    assert text.count("# TYPE rollout_events_total counter") == 1
    store.close()


@pytest.mark.parametrize(
    "increments",
    [
        pytest.param([], id="nothing-counted"),
        pytest.param([(("default", "web", "Normal", "RolloutUpdated"), 1.0)], id="one"),
        pytest.param(
            [
                (("default", "web", "Normal", "RolloutUpdated"), 1.0),
                (("default", "web", "Warning", "RolloutAborted"), 1.0),
                (("default", "web", "Normal", "RolloutUpdated"), 2.5),
                (("ns2", "api", "Normal", "RolloutCompleted"), 1.0),
            ],
            id="several-series-in-first-seen-order",
        ),
        pytest.param([(("default", 'q"\\n', "Normal", "X"), 0.0)], id="escaped-and-zero"),
    ],
)
def test_counter_renders_what_prometheus_client_writes(increments: list[tuple[tuple[str, ...], float]]) -> None:
    labels = ["namespace", "name", "type", "reason"]
    registry = CollectorRegistry()
    reference = Counter("rollout_events_total", "Events recorded on rollouts.", labels, registry=registry)
    ours = CachedCounter("rollout_events_total", "Events recorded on rollouts.", labels)
    for values, amount in increments:
        reference.labels(*values).inc(amount)
        ours.labels(*values).inc(amount)
    expected = masked(generate_latest(registry).decode())
    assert masked(ours.render()) == expected
    own = CollectorRegistry()
    own.register(ours)
    assert masked(generate_latest(own).decode()) == expected
