"""The embedded platform's object store: one SQLite file, Kubernetes-like semantics.

Every object has a `metadata.resourceVersion` drawn from one global counter, so a reader can
ask for "everything that changed since version N" (the change feed the controller watches),
and a write that carries a stale resourceVersion is refused with `ConflictError` — the
controller and the CLI (separate processes) never overwrite each other. Spec writes and
status writes are separate, like the Kubernetes status subresource: `update` keeps the
stored status, `update_status` keeps the stored spec. A spec change bumps
`metadata.generation`.

SQLite in WAL mode lets the CLI read while the controller writes; `BEGIN IMMEDIATE` makes
each write a serialised read-check-write.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rollouts.model.clone import deep_copy
from rollouts.store.errors import AlreadyExistsError, ConflictError, NotFoundError, StoreError

Obj = dict[str, Any]
__all__ = [
    "AlreadyExistsError",
    "Change",
    "ConflictError",
    "Event",
    "NotFoundError",
    "SqliteStore",
    "StoreError",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE INDEX IF NOT EXISTS objects_rv ON objects (rv);
CREATE TABLE IF NOT EXISTS tombstones (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tombstones_rv ON tombstones (rv);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_object ON events (kind, namespace, name);
INSERT OR IGNORE INTO counters (name, value) VALUES ('rv', 0);
"""

DEFAULT_NAMESPACE = "default"
CLUSTER_SCOPED = frozenset({"ClusterAnalysisTemplate"})


@dataclass(frozen=True)
class Change:
    kind: str
    namespace: str
    name: str
    rv: int
    deleted: bool


@dataclass(frozen=True)
class Event:
    kind: str
    namespace: str
    name: str
    type: str
    reason: str
    message: str
    time: str


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(obj: Obj) -> tuple[str, str, str]:
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not kind or not name:
        raise StoreError("object needs kind and metadata.name")
    namespace = "" if kind in CLUSTER_SCOPED else (meta.get("namespace") or DEFAULT_NAMESPACE)
    return str(kind), namespace, str(name)


def _ns(kind: str, namespace: str | None) -> str:
    return "" if kind in CLUSTER_SCOPED else (namespace or DEFAULT_NAMESPACE)


class SqliteStore:
    """A resource store in one SQLite file, safe to share between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        # Events recorded inside `deferring_events`, inserted by the next write's transaction.
        self._deferring = 0
        self._pending_events: builtins.list[tuple[str, str, str, str, str, str, str]] = []
        self._db.executescript(_SCHEMA)
        self._add_owner_column()
        self._listeners: list[Callable[[Change], None]] = []

    # --- plumbing ------------------------------------------------------------------------

    def _add_owner_column(self) -> None:
        """An indexed `owner` ("Kind/name" of the controlling owner reference).

        The embedded platform lists a rollout's ReplicaSets on every reconcile; without the
        index that meant decoding every ReplicaSet of the namespace (the cost that dominated
        the 10,000-rollout benchmark). State files from before the column get it on open.
        """
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(objects)")}
        if "owner" not in columns:
            with self._write() as db:
                db.execute("ALTER TABLE objects ADD COLUMN owner TEXT")
                rows = db.execute("SELECT kind, namespace, name, body FROM objects").fetchall()
                for kind, namespace, name, body in rows:
                    db.execute(
                        "UPDATE objects SET owner = ? WHERE kind = ? AND namespace = ? AND name = ?",
                        (owner_key(json.loads(body)), kind, namespace, name),
                    )
        # `name` is in the index so that it also gives `list`'s order: with (kind, namespace,
        # owner) alone SQLite preferred the primary key for ORDER BY name and scanned every
        # object of the kind in the namespace (reading `owner` after each large body), which
        # made a reconcile O(rollouts in the namespace) again.
        self._db.execute("DROP INDEX IF EXISTS objects_owner")
        self._db.execute("CREATE INDEX IF NOT EXISTS objects_owner_name ON objects (kind, namespace, owner, name)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_listener(self, listener: Callable[[Change], None]) -> None:
        """Called after each write made through this instance (in-process fast path)."""
        self._listeners.append(listener)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; events deferred so far are inserted first, in it (and in
        one of their own if it rolls back, so an event never depends on the write after it)."""
        with self._lock:
            events, self._pending_events = self._pending_events, []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._insert_events(self._db, events)
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                if events:
                    self._pending_events[:0] = events
                    self.flush_events()
                raise
            self._db.execute("COMMIT")

    def _next_rv(self, db: sqlite3.Connection) -> int:
        # One statement, not an UPDATE and a SELECT: every write takes a version.
        row = db.execute("UPDATE counters SET value = value + 1 WHERE name = 'rv' RETURNING value").fetchone()
        return int(row[0])

    def _notify(self, change: Change) -> None:
        for listener in list(self._listeners):
            listener(change)

    def _read(self, db: sqlite3.Connection, kind: str, namespace: str, name: str) -> Obj | None:
        row = db.execute(
            "SELECT body FROM objects WHERE kind = ? AND namespace = ? AND name = ?", (kind, namespace, name)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _put(self, db: sqlite3.Connection, obj: Obj, *, exists: bool = False, old_owner: str | None = None) -> Obj:
        """Store `obj` with the next version; with `exists`, over the stored row whose owner
        column holds `old_owner`.

        An existing row is updated in place, its owner column only when the owner changed:
        replacing the row (a delete and an insert under a new rowid) rewrote every index of
        the table, and a write's commit, which copies each changed page to the WAL, took
        about twice as long (~0.5 ms against ~0.3 ms at 10,000 rollouts)."""
        kind, namespace, name = _key(obj)
        owner = owner_key(obj)
        rv = self._next_rv(db)
        obj["metadata"]["resourceVersion"] = str(rv)
        body = json.dumps(obj, separators=(",", ":"))
        if exists and owner == old_owner:
            db.execute(
                "UPDATE objects SET rv = ?, body = ? WHERE kind = ? AND namespace = ? AND name = ?",
                (rv, body, kind, namespace, name),
            )
        elif exists:
            db.execute(
                "UPDATE objects SET rv = ?, body = ?, owner = ? WHERE kind = ? AND namespace = ? AND name = ?",
                (rv, body, owner, kind, namespace, name),
            )
        else:
            db.execute(
                "INSERT INTO objects (kind, namespace, name, rv, body, owner) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, namespace, name, rv, body, owner),
            )
        return obj

    # --- reads -----------------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        with self._lock:
            return self._read(self._db, kind, _ns(kind, namespace), name)

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Whether the object is stored, without reading its body."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                (kind, _ns(kind, namespace), name),
            ).fetchone()
        return row is not None

    def owner_references(self, kind: str, name: str, namespace: str | None = None) -> builtins.list[Any] | None:
        """The object's `metadata.ownerReferences` ([] when that is not a list), None when the
        object is not stored. SQLite extracts them from the body, so routing a ReplicaSet or Pod
        write to its rollout does not decode the whole object in Python."""
        with self._lock:
            row = self._db.execute(
                "SELECT json_type(body, '$.metadata.ownerReferences'), json_extract(body, '$.metadata.ownerReferences') "
                "FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                (kind, _ns(kind, namespace), name),
            ).fetchone()
        if row is None:
            return None
        return list(json.loads(row[1])) if row[0] == "array" else []

    def must_get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        obj = self.get(kind, name, namespace)
        if obj is None:
            where = f" in namespace {_ns(kind, namespace)}" if kind not in CLUSTER_SCOPED else ""
            raise NotFoundError(f'{kind} "{name}" not found{where}')
        return obj

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        *,
        owner: tuple[str, str] | None = None,
    ) -> list[Obj]:
        """Objects of `kind` (in `namespace`), optionally only those with these labels or this
        controlling owner (`("Rollout", name)`), read through an index."""
        with self._lock:
            if owner is not None:
                rows = self._db.execute(
                    "SELECT body FROM objects WHERE kind = ? AND namespace = ? AND owner = ? ORDER BY name",
                    (kind, _ns(kind, namespace), f"{owner[0]}/{owner[1]}"),
                )
            elif namespace is None:
                rows = self._db.execute("SELECT body FROM objects WHERE kind = ? ORDER BY name", (kind,))
            else:
                rows = self._db.execute(
                    "SELECT body FROM objects WHERE kind = ? AND namespace = ? ORDER BY name",
                    (kind, _ns(kind, namespace)),
                )
            objs = [dict(json.loads(r[0])) for r in rows.fetchall()]
        if labels:
            objs = [
                o
                for o in objs
                if all((o.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in labels.items())
            ]
        return objs

    def names(self, kind: str, namespace: str | None = None) -> builtins.list[tuple[str, str]]:
        """(namespace, name) of every object of `kind` (in `namespace`), in `list`'s order,
        read from the primary-key index alone: no body is read or decoded. For callers that
        need only keys (queueing every rollout at start and on resync)."""
        with self._lock:
            if namespace is None:
                rows = self._db.execute("SELECT namespace, name FROM objects WHERE kind = ? ORDER BY name", (kind,))
            else:
                rows = self._db.execute(
                    "SELECT namespace, name FROM objects WHERE kind = ? AND namespace = ? ORDER BY name",
                    (kind, _ns(kind, namespace)),
                )
            return [(str(r[0]), str(r[1])) for r in rows.fetchall()]

    def current_rv(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'rv'").fetchone()
            return int(row[0])

    def changes_since(self, rv: int) -> tuple[builtins.list[Change], int]:
        """Objects written or deleted after `rv`, oldest first, and the newest version seen."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, namespace, name, rv, 0 FROM objects WHERE rv > ? "
                "UNION ALL SELECT kind, namespace, name, rv, 1 FROM tombstones WHERE rv > ? ORDER BY 4",
                (rv, rv),
            ).fetchall()
        changes = [Change(r[0], r[1], r[2], int(r[3]), bool(r[4])) for r in rows]
        newest = max([rv, *(c.rv for c in changes)])
        return changes, newest

    # --- writes ----------------------------------------------------------------------------

    def create(self, obj: Obj) -> Obj:
        obj = deep_copy(obj)
        kind, namespace, name = _key(obj)
        meta = obj["metadata"]
        if kind not in CLUSTER_SCOPED:
            meta["namespace"] = namespace
        with self._write() as db:
            if self._read(db, kind, namespace, name) is not None:
                raise AlreadyExistsError(f'{kind} "{name}" already exists')
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta["creationTimestamp"] = now_rfc3339()
            stored = self._put(db, obj)
        self._notify(Change(kind, namespace, name, int(stored["metadata"]["resourceVersion"]), False))
        return stored

    def update(self, obj: Obj) -> Obj:
        """Replace spec and metadata (not status); refused if resourceVersion is stale."""
        return self._update(obj, status_only=False)

    def update_status(self, obj: Obj) -> Obj:
        """Replace status only (the status subresource); refused if resourceVersion is stale."""
        return self._update(obj, status_only=True)

    def _update(self, obj: Obj, *, status_only: bool, owned: bool = False) -> Obj:
        """`owned`: `obj` is the caller's to give away (`mutate`'s own fresh read), no copy.

        A status write takes only the status from `obj` (copied below); the rest is the
        freshly decoded stored object, which needs no copy either."""
        obj = obj if status_only or owned else deep_copy(obj)
        kind, namespace, name = _key(obj)
        with self._write() as db:
            current = self._read(db, kind, namespace, name)
            if current is None:
                raise NotFoundError(f'{kind} "{name}" not found')
            old_owner = owner_key(current)  # before `merged` below, which may be `current` edited
            sent_rv = obj["metadata"].get("resourceVersion")
            if sent_rv is not None and str(sent_rv) != current["metadata"]["resourceVersion"]:
                raise ConflictError(
                    f'{kind} "{name}" was changed by someone else (resourceVersion {sent_rv} is stale, '
                    f"now {current['metadata']['resourceVersion']}): read it again and retry"
                )
            if status_only:
                if ("status" in obj) == ("status" in current) and obj.get("status") == current.get("status"):
                    return current
                merged = current
                if "status" in obj:
                    merged["status"] = obj["status"] if owned else deep_copy(obj["status"])
                else:
                    merged.pop("status", None)
            else:
                merged = obj
                for field in ("uid", "creationTimestamp", "generation"):
                    if field in current["metadata"]:
                        merged["metadata"][field] = current["metadata"][field]
                if kind not in CLUSTER_SCOPED:
                    merged["metadata"]["namespace"] = namespace
                if "status" in current:
                    merged["status"] = current["status"]
                else:
                    merged.pop("status", None)
                if _spec_of(merged) != _spec_of(current):
                    merged["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            if not status_only and merged == current:
                return current
            stored = self._put(db, merged, exists=True, old_owner=old_owner)
        self._notify(Change(kind, namespace, name, int(stored["metadata"]["resourceVersion"]), False))
        return stored

    def apply(self, obj: Obj) -> tuple[Obj, str]:
        """Create, or replace spec/metadata of, an object from a manifest: ('created'|'configured'|'unchanged')."""
        kind, namespace, name = _key(obj)
        for _ in range(5):
            current = self.get(kind, name, namespace)
            if current is None:
                try:
                    return self.create(obj), "created"
                except AlreadyExistsError:
                    continue
            desired = copy.deepcopy(obj)
            desired.pop("status", None)
            desired["metadata"] = {**current["metadata"], **desired["metadata"]}
            desired["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                stored = self.update(desired)
            except ConflictError:
                continue
            same = stored["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
            return stored, "unchanged" if same else "configured"
        raise ConflictError(f'{kind} "{name}" kept changing while applying: try again')

    def mutate(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        change: Callable[[Obj], None],
        *,
        status: bool = False,
        current: Obj | None = None,
    ) -> Obj:
        """Read-modify-write with retries on conflict: `change` edits the object in place.

        `current`: the object as the caller has just read it (`get`) and not changed, given
        away. It is edited instead of a read of its own (a SELECT and a decode saved, for the
        callers that read first to skip writes that would change nothing); if it is stale by
        then, the write meets a conflict and the retry reads afresh, as any retry does."""
        for _ in range(10):
            obj = current if current is not None else self.must_get(kind, name, namespace)
            current = None
            change(obj)
            try:
                return self._update(obj, status_only=status, owned=True)
            except ConflictError:
                continue
        raise ConflictError(f'{kind} "{name}" kept changing: try again')

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        ns = _ns(kind, namespace)
        with self._write() as db:
            if self._read(db, kind, ns, name) is None:
                return False
            rv = self._next_rv(db)
            db.execute("DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", (kind, ns, name))
            db.execute("INSERT INTO tombstones (kind, namespace, name, rv) VALUES (?, ?, ?, ?)", (kind, ns, name, rv))
        self._notify(Change(kind, ns, name, rv, True))
        return True

    # --- events ----------------------------------------------------------------------------

    def record_event(self, kind: str, name: str, namespace: str | None, type_: str, reason: str, message: str) -> None:
        event = (kind, _ns(kind, namespace), name, type_, reason, message, now_rfc3339())
        with self._lock:
            if self._deferring:
                self._pending_events.append(event)
                return
            with self._write() as db:
                self._insert_events(db, [event])

    @contextlib.contextmanager
    def deferring_events(self) -> Iterator[None]:
        """Events recorded in this block go into the transaction of the next write (a reconcile
        records an event and then writes what it announces); the rest are written on leaving.

        An event used to be a transaction of its own: a COMMIT (~0.1 ms, the costliest
        statement of a reconcile) for ~0.9 of the ~2.6 per progressing reconcile. Each event
        keeps its time and its place among the events; other processes see it at the next
        write, within the same reconcile."""
        with self._lock:
            self._deferring += 1
        try:
            yield
        finally:
            with self._lock:
                self._deferring -= 1
                if not self._deferring:
                    self.flush_events()

    def flush_events(self) -> None:
        """Write the deferred events now, in one transaction."""
        with self._lock:
            if self._pending_events:
                with self._write():
                    pass

    @staticmethod
    def _insert_events(db: sqlite3.Connection, events: builtins.list[tuple[str, str, str, str, str, str, str]]) -> None:
        if events:
            db.executemany(
                "INSERT INTO events (kind, namespace, name, type, reason, message, time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                events,
            )

    def events(self, kind: str, name: str, namespace: str | None = None, limit: int = 20) -> builtins.list[Event]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, namespace, name, type, reason, message, time FROM events "
                "WHERE kind = ? AND namespace = ? AND name = ? ORDER BY id DESC LIMIT ?",
                (kind, _ns(kind, namespace), name, limit),
            ).fetchall()
        return [Event(*r) for r in reversed(rows)]


def _spec_of(obj: Obj) -> Any:
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    return rest


def owner_key(obj: Obj) -> str | None:
    """ "Kind/name" of the controlling owner reference (else the first one), for the owner index
    (and for stores without one, to filter `list(owner=...)` the same way)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    chosen = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    return f"{chosen.get('kind')}/{chosen.get('name')}" if chosen else None
