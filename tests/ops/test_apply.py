"""apply_operation: the read-patch-write loop the CLI, the demo and the benchmarks share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rollouts.ops import patches
from rollouts.ops.apply import KeptChanging, apply_operation
from rollouts.store.sqlite import SqliteStore


class InterferingStore(SqliteStore):
    """Another writer (the controller) changes the rollout just before each of our first
    `times` spec writes, so they conflict."""

    def __init__(self, path: Path, times: int) -> None:
        super().__init__(path)
        self.times = times

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.times > 0:
            self.times -= 1
            current = self.get("Rollout", obj["metadata"]["name"], "default")
            assert current is not None
            current["metadata"].setdefault("labels", {})["touched"] = str(self.times)
            super().update(current)
        return super().update(obj)


def make(path: Path, times: int) -> InterferingStore:
    store = InterferingStore(path, times)
    store.create(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"strategy": {"canary": {}}, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}},
        }
    )
    return store


def test_a_conflict_is_retried_on_fresh_data(tmp_path: Path) -> None:
    store = make(tmp_path / "s.db", times=2)
    apply_operation(store, "web", "default", patches.pause)
    stored = store.get("Rollout", "web", "default")
    assert stored is not None
    assert stored["spec"]["paused"] is True
    assert stored["metadata"]["labels"]["touched"] == "0"  # the other writer's change is kept


def test_gives_up_after_the_attempts(tmp_path: Path) -> None:
    store = make(tmp_path / "s.db", times=5)
    with pytest.raises(KeptChanging, match='rollout "web" kept changing'):
        apply_operation(store, "web", "default", patches.pause, attempts=3)


def test_a_missing_rollout_is_an_operation_error(tmp_path: Path) -> None:
    store = make(tmp_path / "s.db", times=0)
    with pytest.raises(patches.OperationError, match='rollout "nope" not found in namespace "default"'):
        apply_operation(store, "nope", "default", patches.pause)
