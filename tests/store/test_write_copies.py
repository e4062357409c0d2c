"""Store writes copy what they are given with `deep_copy`, which must be `copy.deepcopy`.

The controller hands `update_status` the rollout it read with a new status, and `create`
its new objects; the stored object must never share a part with the caller's.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from rollouts.model.clone import deep_copy
from rollouts.store.sqlite import SqliteStore


def _aliased() -> dict[str, Any]:
    shared = {"a": [1, 2]}
    return {"x": shared, "y": shared, "z": [shared]}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": {"b": [1, 2.5, None, True, "s"]}, "c": []}, id="json"),
        pytest.param([{"k": "v"}, [[]]], id="list-top"),
        pytest.param({"t": (1, [2]), 3: "int-key"}, id="tuple-and-int-key"),
        pytest.param("plain", id="atomic"),
    ],
)
def test_deep_copy_of_json_is_deepcopy(value: Any) -> None:
    ours, theirs = deep_copy(value), copy.deepcopy(value)
    assert ours == theirs
    assert type(ours) is type(theirs)
    if isinstance(value, dict):
        assert ours is not value
        for key in value:
            if isinstance(value[key], dict | list):
                assert ours[key] is not value[key]


def test_deep_copy_of_json_keeps_aliasing_like_deepcopy() -> None:
    copied = deep_copy(_aliased())
    assert copied["x"] is copied["y"] is copied["z"][0]
    copied["x"]["a"].append(3)
    assert copied["y"] == {"a": [1, 2, 3]}


def test_update_status_stores_a_copy_of_the_callers_status(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    try:
        created = store.create({"kind": "Rollout", "metadata": {"name": "r"}, "spec": {"replicas": 1}})
        conditions: list[dict[str, str]] = [{"type": "Available"}]
        status: dict[str, Any] = {"phase": "Progressing", "conditions": conditions}
        stored = store.update_status({**created, "status": status})
        conditions[0]["type"] = "changed-after"
        assert stored["status"] == {"phase": "Progressing", "conditions": [{"type": "Available"}]}
        assert store.must_get("Rollout", "r")["status"] == stored["status"]
        versions = [int(created["metadata"]["resourceVersion"]), int(stored["metadata"]["resourceVersion"])]
        assert versions[1] == versions[0] + 1 == store.current_rv()
    finally:
        store.close()
