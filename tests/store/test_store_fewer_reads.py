"""The SQLite store's cheaper paths: existence and owner references without decoding a body,
read-modify-write on the caller's own fresh read, and events that ride on the next write.

Each test counts the SQL the store's own connection executes (SQLite's trace callback) or
reads through a second connection, as another process (the CLI) would.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollouts.store.sqlite import Change, ConflictError, NotFoundError, SqliteStore

Obj = dict[str, Any]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    yield s
    s.close()


def traced(store: SqliteStore) -> list[str]:
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    return statements


def service(name: str = "web") -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"selector": {"app": "web"}}}


def replica_set(name: str, refs: Any) -> Obj:
    return {"kind": "ReplicaSet", "metadata": {"name": name, "ownerReferences": refs}, "spec": {"replicas": 1}}


def other_process_events(store: SqliteStore) -> list[tuple[str, str]]:
    con = sqlite3.connect(str(store.path))
    try:
        return [(r[0], r[1]) for r in con.execute("SELECT reason, message FROM events ORDER BY id")]
    finally:
        con.close()


def test_exists_reads_no_body(store: SqliteStore) -> None:
    store.create(service())
    statements = traced(store)
    assert store.exists("Service", "web") and store.exists("Service", "web", "default")
    assert not store.exists("Service", "web", "other") and not store.exists("Service", "api")
    assert statements and not any("body" in s for s in statements)


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        pytest.param(
            [{"kind": "Rollout", "name": "web", "controller": True}],
            [{"kind": "Rollout", "name": "web", "controller": True}],
            id="list",
        ),
        pytest.param(None, [], id="null"),
        pytest.param([{"kind": "Deployment", "name": "x"}], [{"kind": "Deployment", "name": "x"}], id="another-kind"),
    ],
)
def test_owner_references_as_stored(store: SqliteStore, refs: Any, expected: list[Any]) -> None:
    store.create(replica_set("web-1", refs))
    assert store.owner_references("ReplicaSet", "web-1", "default") == expected


def test_owner_references_of_a_missing_object_is_none(store: SqliteStore) -> None:
    assert store.owner_references("ReplicaSet", "nope", "default") is None


def test_mutate_with_the_callers_read_reads_once(store: SqliteStore) -> None:
    store.create(service())
    current = store.must_get("Service", "web")
    statements = traced(store)
    stored = store.mutate(
        "Service", "web", None, lambda svc: svc["spec"]["selector"].update(hash="abc"), current=current
    )
    assert stored["spec"]["selector"] == {"app": "web", "hash": "abc"}
    # Only the read inside the write (to check the version), none before it.
    assert [s.split()[0] for s in statements] == ["BEGIN", "SELECT", "UPDATE", "UPDATE", "COMMIT"]
    assert store.must_get("Service", "web") == stored


def test_mutate_that_changes_nothing_writes_nothing(store: SqliteStore) -> None:
    created = store.create(service())
    changes: list[Change] = []
    store.add_listener(changes.append)
    stored = store.mutate("Service", "web", None, lambda svc: svc["spec"]["selector"].update(app="web"))
    assert stored["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert changes == []


def test_mutate_of_a_missing_object_names_it(store: SqliteStore) -> None:
    with pytest.raises(NotFoundError, match='Service "web" not found in namespace default'):
        store.mutate("Service", "web", None, lambda svc: None)


def test_mutate_edits_the_callers_fresh_read_without_decoding_again(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create(service())
    current = store.must_get("Service", "web")
    decoded: list[str] = []
    loads = json.loads

    def counting_loads(text: str) -> Any:
        decoded.append(text)
        return loads(text)

    monkeypatch.setattr(json, "loads", counting_loads)
    stored = store.mutate(
        "Service", "web", None, lambda svc: svc["spec"]["selector"].update(hash="abc"), current=current
    )
    assert stored is current and current["spec"]["selector"]["hash"] == "abc"
    assert len(decoded) == 1  # the stored version inside the write, to check and compare with


def test_mutate_with_a_stale_read_edits_the_stored_version(store: SqliteStore, tmp_path: Path) -> None:
    store.create(service())
    current = store.must_get("Service", "web")
    cli = SqliteStore(tmp_path / "state.db")  # another process writes in between
    try:
        cli.mutate("Service", "web", None, lambda svc: svc["metadata"].setdefault("labels", {}).update(team="a"))
    finally:
        cli.close()
    stored = store.mutate(
        "Service", "web", None, lambda svc: svc["spec"]["selector"].update(hash="abc"), current=current
    )
    assert stored is not current
    assert stored["metadata"]["labels"] == {"team": "a"} and stored["spec"]["selector"]["hash"] == "abc"


def test_without_deferral_an_event_is_written_at_once(store: SqliteStore) -> None:
    store.record_event("Rollout", "web", None, "Normal", "RolloutUpdated", "one")
    assert other_process_events(store) == [("RolloutUpdated", "one")]


def test_deferred_events_ride_on_the_next_write(store: SqliteStore) -> None:
    store.create(service())
    with store.deferring_events():
        store.record_event("Rollout", "web", None, "Normal", "A", "first")
        store.record_event("Rollout", "web", None, "Normal", "B", "second")
        assert other_process_events(store) == []
        statements = traced(store)
        store.mutate("Service", "web", None, lambda svc: svc["spec"]["selector"].update(hash="abc"))
        assert sum(s == "COMMIT" for s in statements) == 1
        assert other_process_events(store) == [("A", "first"), ("B", "second")]
        store.record_event("Rollout", "web", None, "Normal", "C", "third")
    # Left over at the end of the block: written on leaving it.
    assert other_process_events(store) == [("A", "first"), ("B", "second"), ("C", "third")]


def test_deferred_events_survive_a_write_that_fails(store: SqliteStore) -> None:
    created = store.create(service())
    store.mutate("Service", "web", None, lambda svc: svc["spec"]["selector"].update(hash="new"))
    with store.deferring_events():
        store.record_event("Rollout", "web", None, "Normal", "A", "before the conflict")
        with pytest.raises(ConflictError):
            store.update(created)  # its resourceVersion is stale
        assert other_process_events(store) == [("A", "before the conflict")]
        store.record_event("Rollout", "web", None, "Normal", "B", "after")
    assert other_process_events(store) == [("A", "before the conflict"), ("B", "after")]


def test_deferred_events_are_written_when_the_block_raises(store: SqliteStore) -> None:
    with pytest.raises(RuntimeError), store.deferring_events():
        store.record_event("Rollout", "web", None, "Warning", "A", "then a crash")
        raise RuntimeError("reconcile failed")
    assert other_process_events(store) == [("A", "then a crash")]
