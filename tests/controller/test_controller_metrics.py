"""The controller's Prometheus metrics (Argo's names, reference e): rollout_info and rollout_phase
from the stored rollouts, and rollout_duration_seconds / rollout_events_total counted by the
reconciler from the planner's outcomes and events (a superseded update included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from rollouts.controller.admin import ControllerMetrics, info_phase
from rollouts.controller.rollouts import RolloutReconciler
from rollouts.ops import patches
from rollouts.platform.embedded.platform import EmbeddedPlatform
from rollouts.platform.embedded.proxy_metrics import ProxyMetrics
from rollouts.store.protocol import AsyncSqliteStore
from rollouts.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def condition(type_: str, reason: str) -> dict[str, str]:
    return {"type": type_, "status": "True", "reason": reason}


@pytest.mark.parametrize(
    ("conditions", "phase"),
    [
        pytest.param([], "Progressing", id="no-conditions"),
        pytest.param([condition("Progressing", "NewReplicaSetAvailable")], "Completed", id="completed"),
        pytest.param([condition("Progressing", "ReplicaSetUpdated")], "Progressing", id="progressing"),
        pytest.param([condition("Progressing", "RolloutResumed")], "Progressing", id="resumed"),
        pytest.param([condition("Progressing", "RolloutPaused")], "Paused", id="paused"),
        pytest.param([condition("Progressing", "ProgressDeadlineExceeded")], "Timeout", id="timeout"),
        pytest.param([condition("Progressing", "RolloutAborted")], "Abort", id="abort"),
        pytest.param([condition("Progressing", "ReplicaSetCreateError")], "Error", id="error"),
        pytest.param(
            [condition("Progressing", "RolloutPaused"), condition("InvalidSpec", "InvalidSpec")],
            "InvalidSpec",
            id="invalid-spec-wins",
        ),
    ],
)
def test_info_phase_follows_the_progressing_condition(conditions: list[dict[str, str]], phase: str) -> None:
    assert info_phase({"phase": "Healthy", "conditions": conditions}) == phase


def rollout_doc(image: str = "app:v1") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image, "command": ["run"]}]},
            },
            "strategy": {
                "canary": {
                    "stableService": "web",
                    "canaryService": "web-canary",
                    "trafficRouting": {"nginx": {"stableIngress": "web"}},
                    "steps": [{"setWeight": 50}, {"pause": {}}],
                }
            },
        },
    }


def sample(text: str, metric: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # the exposition sorts labels
    prefix = f"{metric}{{{wanted}}} " if labels else f"{metric} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


async def test_reconciles_count_outcomes_events_and_state(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    metrics = ControllerMetrics()
    async_store = AsyncSqliteStore(store)
    metrics.watch_store(async_store)
    now = [T0]
    reconciler = RolloutReconciler(async_store, EmbeddedPlatform(store), lambda: now[0], metrics)
    for name in ("web", "web-canary"):
        store.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"selector": {}}})
    store.create(rollout_doc())

    async def settle(rounds: int = 6) -> None:
        for _ in range(rounds):
            await reconciler.reconcile("default", "web")
            for rs in store.list("ReplicaSet"):
                n = rs["spec"]["replicas"]
                ready = {"replicas": n, "readyReplicas": n, "availableReplicas": n}
                if rs.get("status") != ready:
                    rs["status"] = ready
                    store.update_status(rs)

    def set_image(image: str) -> None:
        def change(obj: dict[str, Any]) -> None:
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = image

        store.mutate("Rollout", "web", None, change)

    await settle()
    set_image("app:v2")
    await settle()  # paused at 50 %
    now[0] += timedelta(seconds=90)
    set_image("app:v3")  # supersedes revision 2 after 90 s
    await settle()

    text = generate_latest(metrics.registry).decode()
    labels = {"namespace": "default", "status": "Superseded"}
    assert sample(text, "rollout_duration_seconds_count", **labels) == 1
    assert sample(text, "rollout_duration_seconds_sum", **labels) == 90
    assert sample(text, "rollout_duration_seconds_bucket", **labels, le="60.0") == 0
    assert sample(text, "rollout_duration_seconds_bucket", **labels, le="120.0") == 1
    event = {"namespace": "default", "name": "web", "type": "Normal"}
    assert sample(text, "rollout_events_total", **event, reason="RolloutSuperseded") == 1
    assert sample(text, "rollout_events_total", **event, reason="RolloutUpdated") == 2
    info = {"namespace": "default", "name": "web", "strategy": "canary", "traffic_router": "Nginx"}
    assert sample(text, "rollout_info", **info, phase="Paused") == 1
    phases = {"namespace": "default", "name": "web", "strategy": "canary"}
    assert sample(text, "rollout_phase", **phases, phase="Paused") == 1
    assert sample(text, "rollout_phase", **phases, phase="Completed") == 0
    replicas = {"namespace": "default", "name": "web"}
    assert sample(text, "rollout_info_replicas_desired", **replicas) == 2
    assert sample(text, "rollout_info_replicas_updated", **replicas) == 1
    assert sample(text, "rollout_info_replicas_available", **replicas) == 3  # stable 2 + canary 1 (v2 is gone)
    assert sample(text, "rollout_info_replicas_unavailable", **replicas) == 0
    reconciles = sample(text, "rollout_reconcile_count", **replicas)
    assert reconciles is not None and reconciles >= 18

    # The update in flight is promoted: its own outcome is counted too.
    now[0] += timedelta(seconds=30)
    ro = store.must_get("Rollout", "web")
    ro["status"] = patches.promote(ro).obj["status"]
    store.update_status(ro)
    await settle()
    text = generate_latest(metrics.registry).decode()
    assert sample(text, "rollout_duration_seconds_count", namespace="default", status="Promoted") == 1
    assert sample(text, "rollout_duration_seconds_sum", namespace="default", status="Promoted") == 30
    assert sample(text, "rollout_info", **info, phase="Completed") == 1
    store.close()


def named(name: str, **status: Any) -> dict[str, Any]:
    doc = rollout_doc()
    doc["metadata"]["name"] = name
    doc["status"] = status
    return doc


async def test_scrapes_decode_only_the_rollouts_written_since_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rollout_info follows writes made in this process and by others (the CLI), deletions
    included, while a scrape reads only the rollouts written since the previous scrape."""
    store = SqliteStore(tmp_path / "state.db")
    other = SqliteStore(tmp_path / "state.db")  # another process's writes: no in-process listener
    metrics = ControllerMetrics()
    metrics.watch_store(AsyncSqliteStore(store))
    served = ProxyMetrics(metrics.registry)  # the embedded host's admin listener
    for i in range(5):
        store.create(named(f"ro{i}", replicas=2, availableReplicas=1))
    reads: list[str] = []
    for method in ("get", "list"):
        original = getattr(store, method)

        def counting(kind: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            reads.append(kind)
            return _original(kind, *args, **kwargs)

        monkeypatch.setattr(store, method, counting)

    def scrape() -> str:
        """What the admin listeners serve (pre-rendered gauges), checked against prometheus_client's own rendering."""
        reads.clear()
        text = served.render().decode()
        seen = list(reads)
        assert sorted(text.splitlines()) == sorted(generate_latest(metrics.registry).decode().splitlines())
        reads[:] = seen
        return text

    text = scrape()
    assert reads == ["Rollout"]  # the first scrape lists them once
    ro = {"namespace": "default", "name": "ro3"}
    assert sample(text, "rollout_info_replicas_unavailable", **ro) == 1
    assert scrape().count("rollout_info{") == 5 and reads == []  # nothing written: nothing read

    store.mutate(
        "Rollout", "ro3", None, lambda o: o.update(status={"replicas": 2, "availableReplicas": 2}), status=True
    )
    paused = [condition("Progressing", "RolloutPaused")]
    other.mutate("Rollout", "ro1", None, lambda o: o.update(status={"conditions": paused}), status=True)
    other.delete("Rollout", "ro4")
    other.create(named("ro9"))
    text = scrape()
    assert sorted(reads) == ["Rollout"] * 4  # ro1, ro3, ro4 (gone), ro9
    assert sample(text, "rollout_info_replicas_unavailable", **ro) == 0
    info = {"namespace": "default", "strategy": "canary", "traffic_router": "Nginx"}
    assert sample(text, "rollout_info", **info, name="ro1", phase="Paused") == 1
    assert sample(text, "rollout_info", **info, name="ro4", phase="Progressing") is None
    assert sample(text, "rollout_info", **info, name="ro9", phase="Progressing") == 1
    assert text.count("rollout_info{") == 5
    other.close()
