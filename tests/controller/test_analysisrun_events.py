"""The events an AnalysisRun's reconcile records (Argo's analysis and rollout controllers' events).

`transition_events` is checked on a table of status changes; the reconciler end to end on the
SQLite store with a stub provider and an injected clock. (On Kubernetes the same events land as
core/v1 Events: tests/kubernetes/test_operator_scope.py.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollouts.analysis.providers.base import ProviderResult
from rollouts.controller.analysisruns import AnalysisRunReconciler, transition_events
from rollouts.store.protocol import AsyncSqliteStore
from rollouts.store.sqlite import SqliteStore

Obj = dict[str, Any]
Event = tuple[str, str, str, str, str]


def run_meta(*, owned: bool = True, run_type: str | None = "Step") -> Obj:
    labels = {"rollout": "web", **({"rollout-type": run_type} if run_type else {})}
    meta: Obj = {"name": "web-abc-2-1", "namespace": "default", "labels": labels}
    if owned:
        meta["ownerReferences"] = [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web", "uid": "u"}]
    return meta


def status(phase: str | None, **metrics: str) -> Obj | None:
    if phase is None:
        return None
    return {"phase": phase, "metricResults": [{"name": name, "phase": p} for name, p in metrics.items()]}


RUN = "web-abc-2-1"
CASES: list[Any] = [
    pytest.param(
        None,
        status("Running", ok="Running"),
        {},
        [("Rollout", "web", "Normal", "AnalysisRunRunning", f"Step Analysis Run '{RUN}' Status New: 'Running' Previous: 'NoPreviousStatus'")],
        id="starts-running",
    ),
    pytest.param(status("Running", ok="Running"), status("Running", ok="Running"), {}, [], id="no-change"),
    pytest.param(
        status("Running", ok="Running", bad="Running"),
        status("Running", ok="Successful", bad="Running"),
        {},
        [("AnalysisRun", RUN, "Normal", "MetricSuccessful", "Metric 'ok' Completed. Result: Successful")],
        id="one-metric-completes",
    ),
    pytest.param(
        status("Running", ok="Successful", bad="Running"),
        status("Failed", ok="Successful", bad="Failed"),
        {},
        [
            ("AnalysisRun", RUN, "Warning", "MetricFailed", "Metric 'bad' Completed. Result: Failed"),
            ("AnalysisRun", RUN, "Warning", "AnalysisRunFailed", "Analysis Completed. Result: Failed"),
            ("Rollout", "web", "Warning", "AnalysisRunFailed", f"Step Analysis Run '{RUN}' Status New: 'Failed' Previous: 'Running'"),
        ],
        id="fails",
    ),
    pytest.param(
        status("Running", m="Running"),
        status("Inconclusive", m="Inconclusive"),
        {"run_type": "Background"},
        [
            ("AnalysisRun", RUN, "Normal", "MetricInconclusive", "Metric 'm' Completed. Result: Inconclusive"),
            ("AnalysisRun", RUN, "Normal", "AnalysisRunInconclusive", "Analysis Completed. Result: Inconclusive"),
            ("Rollout", "web", "Normal", "AnalysisRunInconclusive", f"Background Analysis Run '{RUN}' Status New: 'Inconclusive' Previous: 'Running'"),
        ],
        id="inconclusive-background",
    ),
    pytest.param(
        status("Running"),
        {"phase": "Error", "message": "Analysis spec invalid: x"},
        {"owned": False},
        [("AnalysisRun", RUN, "Warning", "AnalysisRunError", "Analysis Completed. Result: Error")],
        id="error-standalone-run-no-rollout-event",
    ),
    pytest.param(
        status("Successful", m="Successful"),
        status("Successful", m="Successful"),
        {},
        [],
        id="completed-stays-quiet",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "meta", "expected"), CASES)
def test_transition_events(old: Obj | None, new: Obj | None, meta: Mapping[str, Any], expected: list[Event]) -> None:
    assert transition_events({"metadata": run_meta(**meta)}, old, new) == expected


# --- the reconciler on the SQLite store ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Stub:
    """A `web` provider answering from a table: url → the values of its successive measurements."""

    kind = "web"

    def __init__(self, values: dict[str, list[Any]]) -> None:
        self.values = values

    async def measure(
        self, spec: dict[str, Any], *, now: datetime, context: Mapping[str, str] | None = None
    ) -> ProviderResult:
        value = self.values[spec["url"]].pop(0)
        return ProviderResult(value, str(value).lower())


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "state.db")
    try:
        yield store
    finally:
        store.close()


def metric(name: str, url: str, count: int) -> Obj:
    return {
        "name": name,
        "interval": "10s",
        "count": count,
        "successCondition": "result == true",
        "provider": {"web": {"url": url}},
    }


async def test_a_run_records_its_metric_and_run_events_once(sqlite: SqliteStore) -> None:
    run = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": run_meta(),
        "spec": {"metrics": [metric("quick", "http://quick", 1), metric("slow", "http://slow", 2)]},
    }
    sqlite.create(run)
    clock = Clock()
    reconciler = AnalysisRunReconciler(
        AsyncSqliteStore(sqlite), {"web": Stub({"http://quick": [True], "http://slow": [True, False]})}, clock
    )

    def recorded(kind: str, name: str) -> list[tuple[str, str, str]]:
        return [(e.type, e.reason, e.message) for e in sqlite.events(kind, name, "default", limit=100)]

    await reconciler.reconcile("default", RUN)  # quick completes, slow measured once (1 of 2)
    assert recorded("AnalysisRun", RUN) == [
        ("Normal", "MetricSuccessful", "Metric 'quick' Completed. Result: Successful")
    ]
    assert recorded("Rollout", "web") == [
        (
            "Normal",
            "AnalysisRunRunning",
            f"Step Analysis Run '{RUN}' Status New: 'Running' Previous: 'NoPreviousStatus'",
        )
    ]
    await reconciler.reconcile("default", RUN)  # not due yet: nothing new
    assert len(recorded("AnalysisRun", RUN)) == 1

    clock.now += timedelta(seconds=10)
    await reconciler.reconcile("default", RUN)  # slow's second measurement fails: the metric and the run
    assert sqlite.get("AnalysisRun", RUN, "default")["status"]["phase"] == "Failed"  # type: ignore[index]
    assert recorded("AnalysisRun", RUN)[1:] == [
        ("Warning", "MetricFailed", "Metric 'slow' Completed. Result: Failed"),
        ("Warning", "AnalysisRunFailed", "Analysis Completed. Result: Failed"),
    ]
    assert recorded("Rollout", "web")[1:] == [
        ("Warning", "AnalysisRunFailed", f"Step Analysis Run '{RUN}' Status New: 'Failed' Previous: 'Running'")
    ]
    clock.now += timedelta(seconds=60)
    await reconciler.reconcile("default", RUN)  # completed: no more events
    assert len(recorded("AnalysisRun", RUN)) == 3 and len(recorded("Rollout", "web")) == 2


async def test_an_invalid_run_records_its_error(sqlite: SqliteStore) -> None:
    sqlite.create(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisRun",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"metrics": [{"name": "m", "count": "many", "provider": {"web": {"url": "http://x"}}}]},
        }
    )
    reconciler = AnalysisRunReconciler(AsyncSqliteStore(sqlite), {}, Clock())
    await reconciler.reconcile("default", "bad")
    events = [(e.type, e.reason, e.message) for e in sqlite.events("AnalysisRun", "bad", "default")]
    assert events == [("Warning", "AnalysisRunError", "Analysis Completed. Result: Error")]
    await reconciler.reconcile("default", "bad")
    assert len(sqlite.events("AnalysisRun", "bad", "default")) == 1
