"""Replay of progressing reconciles: store reads, decodes, commits and CPU per reconcile.

    .venv/bin/python bench/reconcile_replay.py [--count 2000] [--every 10] [--base PATH]
        [--record OUT.json] [--compare BEFORE.json] [--profile N]

A store holds `--count` Healthy canary rollouts (filled by `bench/controller_scale.populate`,
cached at `--base` so that runs before and after a change start from the same file). A
second store instance on the same file (as the CLI is: another connection) sets a new image
on every `--every`-th rollout; the real `Controller` routes those writes (one poll of the
change feed) and every write the reconciles make (its in-process listener), and keys are
taken from its real `WorkQueue` and worked by `Controller._work` (the real
`RolloutReconciler` against `InstantPlatform`: the embedded platform's ReplicaSet, Service
and traffic writes, pods ready at once). Time is a fake clock: requeues (the 2 s pauses) are
kept in a table and the clock jumps to the earliest when the queue is empty, so the replay
is deterministic. Object creation times and uids are made deterministic too.

Counted while keys are worked (the controller's connection only): SQL statements by verb and
COMMITs (SQLite's trace callback), `json.loads` calls and bytes (every module), and CPU
(`time.process_time`) per reconcile; `--profile N` runs it under cProfile and prints the top N.

Recorded: every store change in order (kind, namespace, name, resourceVersion, deleted, and
the body as stored, read through a separate connection) and every event as it is recorded;
the events table at the end. `--record` writes that sequence, `--compare` checks a run against
a recorded one and reports the first difference.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rollouts
from bench import controller_scale
from bench.common import healthy as is_healthy
from bench.common import profile_text
from bench.controller_scale import NAMESPACE, InstantPlatform, populate, rollout_name
from rollouts.controller.manager import Controller, Key
from rollouts.ops import patches
from rollouts.store import sqlite as sqlite_module
from rollouts.store.protocol import AsyncSqliteStore
from rollouts.store.sqlite import Change, SqliteStore

START = datetime(2026, 1, 1, tzinfo=UTC)
HORIZON = timedelta(minutes=10)  # the fake clock never passes START + HORIZON (a stuck replay ends)


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class _Uuids:
    """Stands in for the `uuid` module in the store: uid N is UUID(int=N)."""

    def __init__(self) -> None:
        self.next = 0

    def uuid4(self) -> uuid.UUID:
        self.next += 1
        return uuid.UUID(int=self.next)


class _TimedConnection:
    """The store's connection with each `execute` timed by verb (`--sql-time`; adds overhead)."""

    def __init__(self, db: sqlite3.Connection, counters: Counters) -> None:
        self._db = db
        self._counters = counters

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        started = time.perf_counter()
        try:
            return self._db.execute(sql, *args)
        finally:
            if self._counters.on:
                verb = sql.lstrip().split(None, 1)[0].upper()
                seconds = self._counters.sql_seconds
                seconds[verb] = seconds.get(verb, 0.0) + time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class Counters:
    """What the controller's connection executes, and the decodes done in the process, while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.sql: Counter[str] = Counter()
        self.statements: Counter[str] = Counter()
        self.loads = 0
        self.loaded_bytes = 0
        self.sql_seconds: dict[str, float] = {}

    def trace(self, statement: str) -> None:
        if self.on:
            self.sql[statement.lstrip().split(None, 1)[0].upper()] += 1
            self.statements[re.sub(r"'[^']*'|\b\d+\b", "?", statement)[:100]] += 1


def _deterministic(clock: FakeClock) -> None:
    # Module globals replaced in this process only (a benchmark's fake time and uids).
    setattr(sqlite_module, "now_rfc3339", lambda: clock.now.strftime("%Y-%m-%dT%H:%M:%SZ"))  # noqa: B010
    setattr(sqlite_module, "uuid", _Uuids())  # noqa: B010
    setattr(controller_scale, "utc_now", clock)  # noqa: B010  # the reference rollout's reconciler


def _count_loads(counters: Counters) -> None:
    original = json.loads

    def loads(s: Any, *args: Any, **kwargs: Any) -> Any:
        if counters.on:
            counters.loads += 1
            counters.loaded_bytes += len(s)
        return original(s, *args, **kwargs)

    json.loads = loads


def base_store(path: Path, count: int) -> None:
    if path.exists():
        return
    with tempfile.TemporaryDirectory() as work:
        built = Path(work) / "base.db"
        populate(built, count, Path(work))
        con = sqlite3.connect(str(built))
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, path)


async def replay(args: argparse.Namespace) -> dict[str, Any]:
    clock: FakeClock = args.clock
    clock.now = START
    setattr(sqlite_module, "uuid", _Uuids())  # noqa: B010  # from 1 whether or not the base was just built
    base = Path(args.base or f"/tmp/reconcile-replay/base-{args.count}.db")
    work = Path(tempfile.mkdtemp(prefix="reconcile-replay-"))
    path = work / "state.db"
    shutil.copyfile(base, path)
    counters = Counters()
    if not args.no_count:
        _count_loads(counters)
    store = SqliteStore(path)
    cli = SqliteStore(path)  # another connection, as the CLI's process has
    raw = sqlite3.connect(str(path))  # the recorder's: neither traced nor decoded
    if not args.no_count:
        store._db.set_trace_callback(counters.trace)
    if args.sql_time:
        store._db = _TimedConnection(store._db, counters)  # type: ignore[assignment]
    controller = Controller(AsyncSqliteStore(store), InstantPlatform(store), {}, clock=clock, change_feed=store)
    sequence: list[list[Any]] = []

    def record(change: Change) -> None:
        row = raw.execute(
            "SELECT rv, body FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
            (change.kind, change.namespace, change.name),
        ).fetchone()
        body = row[1] if row is not None and int(row[0]) == change.rv else None
        sequence.append(["write", change.kind, change.namespace, change.name, change.rv, change.deleted, body])

    original_event = SqliteStore.record_event

    def record_event(
        self: SqliteStore, kind: str, name: str, namespace: str | None, type_: str, reason: str, message: str
    ) -> None:
        original_event(self, kind, name, namespace, type_, reason, message)
        sequence.append(["event", kind, namespace, name, type_, reason, message])

    SqliteStore.record_event = record_event  # type: ignore[method-assign]
    store.add_listener(controller.on_store_change)
    if not args.no_count:  # the recorder's reads would be in the CPU figures
        store.add_listener(record)
    controller._rv = store.current_rv()
    controller._learn_references()

    # Requeues on the fake clock (`WorkQueue.add_after` needs a loop's real timers).
    timers: dict[Key, datetime] = {}

    def add_after(key: Key, seconds: float) -> None:
        if seconds <= 0:
            controller.queue.add(key)
            return
        due = clock.now + timedelta(seconds=seconds)
        if key not in timers or due < timers[key]:
            timers[key] = due

    controller.queue.add_after = add_after  # type: ignore[method-assign]

    updated = [rollout_name(i) for i in range(0, args.count, args.every)]
    for name in updated:
        ro = cli.must_get("Rollout", name, NAMESPACE)
        cli.update(patches.set_image(ro, "app", "rollouts-demo:v2").obj)

    def poll() -> None:
        # One turn of `Controller._poll`: the CLI's writes reach the controller through the feed.
        changes, newest = store.changes_since(controller._rv)
        controller._rv = newest
        for change in changes:
            if change.rv not in controller._routed:
                controller._route(change)
        controller._routed = {rv for rv in controller._routed if rv > newest}

    poll()
    queue = controller.queue
    cpu: list[float] = []
    wall: list[float] = []  # with the store's I/O waits (WAL checkpoints) that CPU time leaves out
    profiler = cProfile.Profile() if args.profile else None
    reconciles: Counter[str] = Counter()
    while True:
        key = queue._take()
        if key is None:
            if not timers:
                break
            due = min(timers.values())
            if due > START + HORIZON:
                break
            clock.now = due
            for k in sorted(k for k, d in timers.items() if d <= due):
                del timers[k]
                queue.add(k)
            continue
        queue._queued_at.pop(key, None)
        queue._active.add(key)
        counters.on = True
        if profiler is not None:
            profiler.enable()
        started, started_wall = time.process_time(), time.perf_counter()
        await controller._work(key)
        cpu.append(time.process_time() - started)
        wall.append(time.perf_counter() - started_wall)
        if profiler is not None:
            profiler.disable()
        counters.on = False
        reconciles[key[0]] += 1
        queue._active.discard(key)
        again = queue._again.pop(key, None)
        if again is not None:
            queue.add(key, background=not again)
    poll()  # nothing else was written
    healthy = 0
    for name in updated:
        status = cli.must_get("Rollout", name, NAMESPACE).get("status") or {}
        healthy += bool(is_healthy(status))
    events = [
        list(r)
        for r in raw.execute("SELECT kind, namespace, name, type, reason, message, time FROM events ORDER BY id")
    ]
    store.close()
    cli.close()
    raw.close()
    shutil.rmtree(work, ignore_errors=True)
    n = len(cpu)
    sql = counters.sql
    result: dict[str, Any] = {
        "rollouts_module": str(Path(rollouts.__file__).parent),
        "count": args.count,
        "updated": len(updated),
        "healthy": healthy,
        "reconciles": dict(reconciles),
        "fake_seconds": (clock.now - START).total_seconds(),
        "per_reconcile": {
            "selects": sql["SELECT"] / n,
            "statements": sum(sql.values()) / n,
            "writes": (sql["UPDATE"] + sql["INSERT"] + sql["DELETE"]) / n,
            "commits": sql["COMMIT"] / n,
            "json_loads": counters.loads / n,
            "loaded_kib": counters.loaded_bytes / n / 1024,
            "cpu_ms": sum(cpu) / n * 1000,
            "wall_ms": sum(wall) / n * 1000,
        },
        "sql": dict(sql),
        "sql_us_per_reconcile": {k: round(v / n * 1e6, 1) for k, v in counters.sql_seconds.items()},
        "statements_per_reconcile": {k: round(v / n, 2) for k, v in counters.statements.most_common(14)},
        "changes": sum(1 for s in sequence if s[0] == "write"),
        "events": len(events),
    }
    result["sequence"] = sequence
    result["events_table"] = events
    if profiler is not None:
        result["profile"] = profile_text(profiler, args.profile)
    return result


def compare(now: dict[str, Any], before: dict[str, Any]) -> str:
    for field in ("sequence", "events_table"):
        a, b = before[field], now[field]
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return f"{field}[{i}] differs:\n  before {json.dumps(x)[:600]}\n  now    {json.dumps(y)[:600]}"
        if len(a) != len(b):
            return f"{field}: {len(b)} entries now, {len(a)} before"
    return f"identical: {len(now['sequence'])} changes and events in order, {len(now['events_table'])} events"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--every", type=int, default=10, help="set a new image on every Nth rollout")
    parser.add_argument("--base", help="populated store to start from (built and kept when missing)")
    parser.add_argument("--record", help="write the run (figures and change sequence) as JSON here")
    parser.add_argument("--compare", help="compare the change sequence with this recorded run")
    parser.add_argument("--no-count", action="store_true", help="no SQL or decode counting (for CPU figures)")
    parser.add_argument("--sql-time", action="store_true", help="time the store's SQL statements by verb")
    parser.add_argument("--profile", type=int, default=0, help="cProfile the reconciles; print N lines")
    args = parser.parse_args()
    args.clock = FakeClock()
    _deterministic(args.clock)
    base_store(Path(args.base or f"/tmp/reconcile-replay/base-{args.count}.db"), args.count)
    result = asyncio.run(replay(args))
    figures = {k: v for k, v in result.items() if k not in ("sequence", "events_table", "profile")}
    print(json.dumps(figures, indent=1))
    if "profile" in result:
        print(result["profile"])
    if args.record:
        Path(args.record).write_text(json.dumps(result))
    if args.compare:
        verdict = compare(result, json.loads(Path(args.compare).read_text()))
        print("compare:", verdict)
        return 0 if verdict.startswith("identical") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
