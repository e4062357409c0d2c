"""The SQLite store: resource versions, stale-write refusal, spec/status separation, change feed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollouts.store.sqlite import AlreadyExistsError, Change, ConflictError, NotFoundError, SqliteStore


def rollout(name: str = "app", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {"replicas": 1, **spec},
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    yield s
    s.close()


def test_create_assigns_identity_and_versions(store: SqliteStore) -> None:
    created = store.create(rollout())
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["generation"] == 1 and meta["uid"]
    assert int(meta["resourceVersion"]) > 0
    with pytest.raises(AlreadyExistsError):
        store.create(rollout())


def test_stale_write_is_refused_and_nothing_is_lost(store: SqliteStore) -> None:
    first = store.create(rollout())
    controller_copy = dict(first, status={"phase": "Healthy"})
    cli_copy = dict(first, spec={"replicas": 3})
    store.update(cli_copy)
    with pytest.raises(ConflictError, match="read it again and retry"):
        store.update_status(controller_copy)
    stored = store.must_get("Rollout", "app")
    assert stored["spec"]["replicas"] == 3 and "status" not in stored


def test_spec_write_keeps_status_and_bumps_generation(store: SqliteStore) -> None:
    obj = store.create(rollout())
    obj["status"] = {"phase": "Healthy"}
    obj = store.update_status(obj)
    obj["spec"]["replicas"] = 2
    obj["status"] = {"phase": "overwritten?"}
    updated = store.update(obj)
    assert updated["status"] == {"phase": "Healthy"}
    assert updated["metadata"]["generation"] == 2


def test_status_write_keeps_spec_and_generation(store: SqliteStore) -> None:
    obj = store.create(rollout())
    obj["spec"]["replicas"] = 9
    obj["status"] = {"phase": "Paused"}
    updated = store.update_status(obj)
    assert updated["spec"]["replicas"] == 1 and updated["status"] == {"phase": "Paused"}
    assert updated["metadata"]["generation"] == 1


def test_unchanged_write_does_not_bump_version(store: SqliteStore) -> None:
    obj = store.create(rollout())
    again = store.update(obj)
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_change_feed_and_listener(store: SqliteStore) -> None:
    seen: list[Change] = []
    store.add_listener(seen.append)
    start = store.current_rv()
    store.create(rollout("a"))
    store.create(rollout("b"))
    store.delete("Rollout", "a")
    changes, newest = store.changes_since(start)
    assert [(c.name, c.deleted) for c in changes] == [("b", False), ("a", True)]
    assert newest == store.current_rv()
    assert [(c.name, c.deleted) for c in seen] == [("a", False), ("b", False), ("a", True)]


def test_second_process_sees_writes(tmp_path: Path) -> None:
    one, two = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    one.create(rollout())
    assert two.must_get("Rollout", "app")["metadata"]["generation"] == 1
    with pytest.raises(NotFoundError, match='Rollout "nope" not found'):
        two.must_get("Rollout", "nope")
    one.close()
    two.close()


def test_apply_creates_then_configures_then_is_unchanged(store: SqliteStore) -> None:
    assert store.apply(rollout())[1] == "created"
    assert store.apply(rollout(replicas=2))[1] == "configured"
    assert store.apply(rollout(replicas=2))[1] == "unchanged"


def test_mutate_retries_on_conflict(store: SqliteStore) -> None:
    store.create(rollout())
    calls = 0

    def change(obj: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # someone else writes between our read and our write
            store.mutate("Rollout", "app", None, lambda o: o["spec"].update(replicas=5))
        obj["spec"]["paused"] = True

    result = store.mutate("Rollout", "app", None, change)
    assert result["spec"] == {"replicas": 5, "paused": True}
    assert calls == 2


def test_label_filter_and_events(store: SqliteStore) -> None:
    store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "labels": {"app": "x"}}})
    store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2", "labels": {"app": "y"}}})
    assert [p["metadata"]["name"] for p in store.list("Pod", labels={"app": "y"})] == ["p2"]
    store.record_event("Rollout", "app", None, "Normal", "RolloutUpdated", "updated")
    assert [e.reason for e in store.events("Rollout", "app")] == ["RolloutUpdated"]


def test_list_by_owner_uses_the_controlling_reference(store: SqliteStore) -> None:
    def rs(name: str, owner: str) -> dict[str, Any]:
        ref = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": owner, "controller": True}
        return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "ownerReferences": [ref]}}

    store.create(rs("a-1", "a"))
    store.create(rs("b-1", "b"))
    store.create(rs("a-2", "a"))
    assert [o["metadata"]["name"] for o in store.list("ReplicaSet", "default", owner=("Rollout", "a"))] == [
        "a-1",
        "a-2",
    ]


def test_state_file_from_before_the_owner_index_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE objects (kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,"
        " rv INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, namespace, name));"
    )
    body = '{"kind":"ReplicaSet","metadata":{"name":"a-1","ownerReferences":[{"kind":"Rollout","name":"a"}]}}'
    old.execute("INSERT INTO objects VALUES ('ReplicaSet', 'default', 'a-1', 1, ?)", (body,))
    old.commit()
    old.close()
    upgraded = SqliteStore(path)
    assert [o["metadata"]["name"] for o in upgraded.list("ReplicaSet", "default", owner=("Rollout", "a"))] == ["a-1"]
    upgraded.close()


def _owned(kind: str, name: str, owner: str, **labels: str) -> dict[str, Any]:
    ref = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": owner, "uid": "u", "controller": True}
    return {"kind": kind, "metadata": {"name": name, "labels": labels, "ownerReferences": [ref]}}


def test_list_by_owner_is_answered_from_the_owner_index(store: SqliteStore) -> None:
    """The regression that kept a reconcile O(rollouts): an owner index SQLite did not use for
    `ORDER BY name` (it scanned the primary key instead)."""
    rows = store._db.execute(
        "EXPLAIN QUERY PLAN SELECT body FROM objects WHERE kind = ? AND namespace = ? AND owner = ? ORDER BY name",
        ("ReplicaSet", "default", "Rollout/a"),
    ).fetchall()
    plan = " ".join(str(r[-1]) for r in rows)
    assert "objects_owner_name" in plan and "TEMP B-TREE" not in plan, plan


def test_state_file_with_the_first_owner_index_gets_the_ordered_one(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = SqliteStore(path)
    first._db.execute("DROP INDEX objects_owner_name")
    first._db.execute("CREATE INDEX objects_owner ON objects (kind, namespace, owner)")
    first.create(_owned("ReplicaSet", "a-1", "a"))
    first.close()
    reopened = SqliteStore(path)
    indexes = {r[0] for r in reopened._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "objects_owner_name" in indexes and "objects_owner" not in indexes
    assert [o["metadata"]["name"] for o in reopened.list("ReplicaSet", owner=("Rollout", "a"))] == ["a-1"]
    reopened.close()


def test_analysis_runs_by_owner_and_label(store: SqliteStore) -> None:
    """A rollout's runs are found by their controller reference (as Argo does); the label
    filter still applies on top, and another rollout's runs (same label value or not) are not read."""
    store.create(_owned("AnalysisRun", "web-1", "web", rollout="web"))
    store.create(_owned("AnalysisRun", "web-2", "web", rollout="web"))
    store.create(_owned("AnalysisRun", "api-1", "api", rollout="api"))
    store.create(_owned("AnalysisRun", "stray", "api", rollout="web"))  # labelled web, owned by api
    unowned = {"kind": "AnalysisRun", "metadata": {"name": "manual", "labels": {"rollout": "web"}}}
    store.create(unowned)
    found = store.list("AnalysisRun", "default", {"rollout": "web"}, owner=("Rollout", "web"))
    assert [o["metadata"]["name"] for o in found] == ["web-1", "web-2"]
    assert [o["metadata"]["name"] for o in store.list("AnalysisRun", "other", owner=("Rollout", "web"))] == []


def test_names_lists_keys_without_decoding_bodies(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import rollouts.store.sqlite as module

    store.create(rollout("b"))
    store.create(rollout("a"))
    other = rollout("c")
    other["metadata"]["namespace"] = "prod"
    store.create(other)
    store.create({"kind": "ClusterAnalysisTemplate", "metadata": {"name": "t"}, "spec": {}})

    class NoDecoding:
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(_text: str) -> Any:
            raise AssertionError("a body was decoded")

    monkeypatch.setattr(module, "json", NoDecoding)
    assert store.names("Rollout") == [("default", "a"), ("default", "b"), ("prod", "c")]
    assert store.names("Rollout", "prod") == [("prod", "c")]
    assert store.names("Rollout", "empty") == []
    assert store.names("ClusterAnalysisTemplate") == [("", "t")]
    assert store.names("ClusterAnalysisTemplate", "prod") == [("", "t")]


def test_status_write_copies_only_the_status(store: SqliteStore) -> None:
    obj = store.create(rollout())
    obj["status"] = {"phase": "Paused", "conditions": [{"type": "Available"}]}
    written = store.update_status(obj)
    obj["status"]["conditions"].append({"type": "Mine"})  # the caller keeps editing its object
    assert written["status"]["conditions"] == [{"type": "Available"}]
    assert store.must_get("Rollout", "app")["status"]["conditions"] == [{"type": "Available"}]
    same = dict(written)
    assert store.update_status(same)["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
    same.pop("status")
    cleared = store.update_status(same)
    assert "status" not in cleared and "status" not in store.must_get("Rollout", "app")
    assert int(cleared["metadata"]["resourceVersion"]) > int(written["metadata"]["resourceVersion"])


def test_mutate_writes_what_the_change_made_and_returns_a_fresh_object(store: SqliteStore) -> None:
    store.create(rollout())
    first = store.mutate("Rollout", "app", None, lambda o: o["spec"].update(paused=True))
    first["spec"]["replicas"] = 7  # editing the returned object changes nothing stored
    assert store.must_get("Rollout", "app")["spec"] == {"replicas": 1, "paused": True}
    status = store.mutate("Rollout", "app", None, lambda o: o.update(status={"phase": "Paused"}), status=True)
    assert status["status"] == {"phase": "Paused"} and status["metadata"]["generation"] == 2


def test_an_update_that_changes_the_owner_moves_the_object_in_the_owner_index(store: SqliteStore) -> None:
    created = store.create(_owned("ReplicaSet", "rs", "a"))
    created["metadata"]["labels"] = {"x": "1"}  # same owner: the row is updated in place
    updated = store.update(created)
    assert [o["metadata"]["labels"] for o in store.list("ReplicaSet", owner=("Rollout", "a"))] == [{"x": "1"}]
    updated["metadata"]["ownerReferences"][0]["name"] = "b"  # adopted by another rollout
    store.update(updated)
    assert store.list("ReplicaSet", owner=("Rollout", "a")) == []
    assert [o["metadata"]["name"] for o in store.list("ReplicaSet", owner=("Rollout", "b"))] == ["rs"]
    store.delete("ReplicaSet", "rs")
    store.create(_owned("ReplicaSet", "rs", "c"))  # recreated after a delete: a new row
    assert [o["metadata"]["name"] for o in store.list("ReplicaSet", owner=("Rollout", "c"))] == ["rs"]
