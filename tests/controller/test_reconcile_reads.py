"""What a progressing reconcile costs the SQLite store: reads, decodes and transactions.

A canary rollout with two Services is brought to Healthy on the embedded platform's own store
writes (pods ready the moment they are asked for, no processes), then given a new image. The
statements the store's connection executes are recorded (SQLite's trace callback, values
inlined) per reconcile, so a change that brings back a redundant read or an extra COMMIT fails.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollouts.controller.manager import Controller
from rollouts.controller.rollouts import RolloutReconciler
from rollouts.model.rollout import Rollout
from rollouts.platform.embedded.platform import EmbeddedPlatform, EmbeddedWorkloads
from rollouts.store.protocol import AsyncSqliteStore
from rollouts.store.sqlite import Change, SqliteStore

Obj = dict[str, Any]
NAME = "web"


class ReadyWorkloads(EmbeddedWorkloads):
    """The embedded platform's ReplicaSet writes; the runtime's readiness write at once."""

    async def create_replica_set(
        self, rollout: Rollout, name: str, pod_hash: str, revision: int, replicas: int, template: Obj
    ) -> None:
        await super().create_replica_set(rollout, name, pod_hash, revision, replicas, template)
        self._ready(rollout.metadata.namespace or "default", name, replicas)

    async def scale_replica_set(self, namespace: str, name: str, replicas: int) -> None:
        await super().scale_replica_set(namespace, name, replicas)
        self._ready(namespace, name, replicas)

    def _ready(self, namespace: str, name: str, replicas: int) -> None:
        def change(rs: Obj) -> None:
            rs["status"] = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}

        self.store.mutate("ReplicaSet", name, namespace, change, status=True)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def manifests(image: str) -> list[Obj]:
    services: list[Obj] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}, "spec": {"selector": {"app": NAME}}}
        for n in (NAME, f"{NAME}-canary")
    ]
    container = {"name": "app", "image": image, "command": [sys.executable, "-c", "pass"]}
    rollout: Obj = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": NAME},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {"metadata": {"labels": {"app": NAME}}, "spec": {"containers": [container]}},
            "strategy": {
                "canary": {
                    "stableService": NAME,
                    "canaryService": f"{NAME}-canary",
                    "steps": [{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 50}],
                }
            },
        },
    }
    return [*services, rollout]


class Recorded:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.changes: list[Change] = []
        self.service_actions = 0  # PointService and SetCanaryWeight carried out

    def reset(self) -> None:
        self.statements.clear()
        self.changes.clear()
        self.service_actions = 0

    def count(self, prefix: str, kind: str | None = None) -> int:
        return sum(s.startswith(prefix) and (kind is None or f"kind = '{kind}'" in s) for s in self.statements)

    def event_only_transactions(self) -> int:
        """Transactions that wrote events and nothing else, but for the last one (events
        recorded after the reconcile's last write are written when it ends)."""
        transactions: list[tuple[bool, bool]] = []  # (wrote events, wrote objects)
        for statement in self.statements:
            if statement.startswith("BEGIN"):
                transactions.append((False, False))
            elif statement.startswith("INSERT INTO events"):
                transactions[-1] = (True, transactions[-1][1])
            elif statement.startswith(("INSERT", "UPDATE", "DELETE")):
                transactions[-1] = (transactions[-1][0], True)
        return sum(events and not objects for events, objects in transactions[:-1])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    yield s
    s.close()


async def progressing_reconciles(store: SqliteStore, recorded: Recorded) -> list[tuple[int, int, int, int]]:
    """Per reconcile after `set image`, until Healthy: (body reads of Services, Service actions,
    Service writes, transactions of events alone)."""
    clock = Clock()
    platform = EmbeddedPlatform(store)
    platform.workloads = ReadyWorkloads(store)
    point, set_weight = platform.services.point, platform.traffic.set_weight

    async def counted_point(*args: Any) -> None:
        recorded.service_actions += 1
        await point(*args)

    async def counted_set_weight(*args: Any) -> None:
        recorded.service_actions += 1
        await set_weight(*args)

    setattr(platform.services, "point", counted_point)  # noqa: B010
    setattr(platform.traffic, "set_weight", counted_set_weight)  # noqa: B010
    reconciler = RolloutReconciler(AsyncSqliteStore(store), platform, clock)
    for obj in manifests("app:v1"):
        store.create(obj)
    for _ in range(5):
        await reconciler.reconcile("default", NAME)
    rollout = store.must_get("Rollout", NAME)
    rollout["spec"]["template"]["spec"]["containers"][0]["image"] = "app:v2"
    store.update(rollout)
    store.add_listener(recorded.changes.append)
    store._db.set_trace_callback(recorded.statements.append)
    seen = []
    for _ in range(12):
        recorded.reset()
        outcome = await reconciler.reconcile("default", NAME)
        seen.append(
            (
                recorded.count("SELECT body", "Service"),
                recorded.service_actions,
                sum(c.kind == "Service" for c in recorded.changes),
                recorded.event_only_transactions(),
            )
        )
        clock.now += timedelta(seconds=outcome.requeue_after or 1)
    status = store.must_get("Rollout", NAME)["status"]
    assert status["phase"] == "Healthy" and status["stableRS"] == status["currentPodHash"]
    return seen


async def test_services_are_read_once_per_traffic_action_and_never_to_check_they_exist(store: SqliteStore) -> None:
    recorded = Recorded()
    seen = await progressing_reconciles(store, recorded)
    assert any(writes for _, _, writes, _ in seen)
    for reads, actions, writes, _ in seen:
        # One body read per PointService or SetCanaryWeight, to skip a write that would change
        # nothing, and one inside each write (the version check). The reference check reads
        # no body, and a write edits the action's read instead of reading again.
        assert reads == actions + writes


async def test_a_reconciles_events_take_no_transaction_of_their_own(store: SqliteStore) -> None:
    recorded = Recorded()
    seen = await progressing_reconciles(store, recorded)
    events = store.events("Rollout", NAME)
    assert any(e.reason == "RolloutUpdated" for e in events)
    # Each of the reconcile's events rides on its next write (here the status write at the latest).
    assert [event_only for *_, event_only in seen] == [0] * len(seen)


async def test_routing_a_replica_set_or_pod_write_decodes_no_body(store: SqliteStore) -> None:
    controller = Controller(AsyncSqliteStore(store), EmbeddedPlatform(store), {}, change_feed=store)
    owner = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": NAME, "uid": "u", "controller": True}
    store.create({"kind": "ReplicaSet", "metadata": {"name": "web-1", "ownerReferences": [owner]}, "spec": {}})
    rs_ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "r", "controller": True}
    store.create({"kind": "Pod", "metadata": {"name": "web-1-a", "ownerReferences": [rs_ref]}, "spec": {}})
    store.create({"kind": "Pod", "metadata": {"name": "orphan"}, "spec": {}})
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    for kind, name in (("ReplicaSet", "web-1"), ("Pod", "web-1-a"), ("Pod", "orphan"), ("Pod", "gone")):
        controller._route(Change(kind, "default", name, 1, False))
    assert list(controller.queue._waiting) == [("Rollout", "default", NAME)]
    assert statements and not any(s.startswith("SELECT body") for s in statements)
