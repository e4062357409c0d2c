"""Controller scale: 100, 1,000 and 10,000 rollouts in one store, one controller process.

    .venv/bin/python bench/controller_scale.py [--sizes 100,1000,10000] [--variants idle,progressing]
        [--platform embedded|indexed] [--window 40] [--pass-cap 120] [--resync 30] [--tracemalloc]
        [--profile N] [--profile-pass] [--scrape]

For each size a store is filled once (in this process) with N canary rollouts that are
already Healthy with their status written, each with its ReplicaSet (2 replicas, ready) and
its two Services — the objects and status the real controller writes, cloned from one
reference rollout that the real `RolloutReconciler` brought to Healthy. Then, per variant, a
fresh child process opens a copy of that store and runs the real `Controller` (work queue,
reconcilers, change-feed poll, 30 s resync) against a fake platform whose pods are ready at
once (`InstantPlatform`, below: ReplicaSet status follows spec in the same call; Services and
traffic weights are the embedded platform's own store writes, no processes, no proxy):

* idle        - every rollout Healthy: the controller's initial pass (every key queued at
                start), then a steady window that includes the first resync;
* progressing - the same, then 10 % of the rollouts get a new image at once and go through
                setWeight 20 / pause 2s / setWeight 50 / pause 2s to promotion while the rest
                stay idle.

Per child: reconcile latency (every `RolloutReconciler.reconcile` call timed, wall clock, from
its start to its return: the store writes and the in-process change listeners it triggers are
in it, the time its key waited in the work queue is not), the queue wait of each Rollout key
apart (from being queued to being taken, `WorkQueue.observe_wait`), the event loop's lag (how
late a 10 ms timer fires: what a request proxied on the same loop would wait), reconciles/s,
the initial pass's duration (bounded by --pass-cap; when it does not finish, the projected
duration from the mean), CPU seconds (getrusage), RSS growth per rollout from just before the
controller starts to the end, optionally retained Python heap per rollout (--tracemalloc, a
separate slower run), and for the progressing variant the time from `set image` to Healthy.

--platform: `embedded` (default) lists a rollout's ReplicaSets as the embedded platform does
(`EmbeddedWorkloads.replica_sets`, through the store's owner index); `indexed` keeps an
owner -> ReplicaSet-names index in memory instead (as a Kubernetes informer with an owner
index would). --profile N runs one child with
cProfile over the steady window (with --profile-pass: over the initial pass) and prints the top
N functions. Each child also records the load average at its end (the machine is shared).

--scrape: instead of the controller runs, time a /metrics scrape of the rollout gauges
(`rollout_info`, `rollout_phase`, `rollout_info_replicas_*`: `generate_latest` over a registry
holding only that collector, in this process) per size: listing and decoding every rollout per
scrape (the collector without a change feed, as before the cache; still the Kubernetes store's
path), then with the SQLite change feed: the first scrape, a scrape with nothing written since,
and one after 1 % of the rollouts had their status written.

Targets (DESIGN.md): 10,000 rollouts held, p99 reconcile < 50 ms, < 100 KB per idle rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import cProfile
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import demo_container, healthy, machine, percentile, profile_text, rss_kib
from rollouts.controller.manager import Controller, utc_now
from rollouts.controller.rollouts import Outcome, RolloutReconciler
from rollouts.core.hashing import HASH_LABEL, pod_template_hash
from rollouts.core.plan import ReplicaSetView
from rollouts.model import validation
from rollouts.model.rollout import Rollout
from rollouts.ops import patches
from rollouts.platform.embedded import objects
from rollouts.platform.embedded.platform import EmbeddedServices, EmbeddedTraffic, EmbeddedWorkloads
from rollouts.store.protocol import AsyncSqliteStore
from rollouts.store.sqlite import Change, SqliteStore

Obj = dict[str, Any]
NAMESPACE = "default"
REPLICAS = 2
STEPS: list[Obj] = [
    {"setWeight": 20},
    {"pause": {"duration": "2s"}},
    {"setWeight": 50},
    {"pause": {"duration": "2s"}},
]
IDEAL_PROGRESS_SECONDS = 4.0  # the pauses; setWeight steps complete as soon as the pods are ready (at once)


# --- the fake platform --------------------------------------------------------------------


class InstantWorkloads(EmbeddedWorkloads):
    """The embedded platform's ReplicaSet writes, with pods that are ready the moment they are asked for.

    With `indexed`, a rollout's ReplicaSets are read by name from an in-memory owner index
    instead of by listing the namespace (see the module docstring)."""

    def __init__(self, store: SqliteStore, *, indexed: bool) -> None:
        super().__init__(store)
        self.indexed = indexed
        self._index: dict[tuple[str, str], set[str]] | None = None

    def _owned(self, namespace: str, rollout: str) -> set[str]:
        if self._index is None:
            self._index = {}
            for rs in self.store.list("ReplicaSet"):
                owner = objects.owner_name(rs, "Rollout")
                if owner is not None:
                    key = (rs["metadata"].get("namespace", NAMESPACE), owner)
                    self._index.setdefault(key, set()).add(rs["metadata"]["name"])
        return self._index.setdefault((namespace, rollout), set())

    def replica_sets(self, rollout: Rollout) -> list[ReplicaSetView]:
        if not self.indexed:
            return super().replica_sets(rollout)
        namespace = rollout.metadata.namespace or NAMESPACE
        views = []
        for name in sorted(self._owned(namespace, rollout.metadata.name)):
            rs = self.store.get("ReplicaSet", name, namespace)
            if rs is None:
                continue
            status = rs.get("status") or {}
            views.append(
                ReplicaSetView(
                    name=name,
                    pod_hash=objects.labels_of(rs).get(HASH_LABEL, ""),
                    revision=int(objects.annotations_of(rs).get(objects.REVISION_ANNOTATION, "0")),
                    replicas=int(rs["spec"].get("replicas", 0)),
                    ready=int(status.get("readyReplicas", 0)),
                    available=int(status.get("availableReplicas", 0)),
                    template=rs["spec"].get("template") or {},
                    scale_down_at=objects.scale_down_deadline(rs),
                )
            )
        return views

    async def create_replica_set(
        self, rollout: Rollout, name: str, pod_hash: str, revision: int, replicas: int, template: dict[str, Any]
    ) -> None:
        await super().create_replica_set(rollout, name, pod_hash, revision, replicas, template)
        namespace = rollout.metadata.namespace or NAMESPACE
        if self.indexed:
            self._owned(namespace, rollout.metadata.name).add(name)
        self._ready(namespace, name, replicas)

    async def scale_replica_set(self, namespace: str, name: str, replicas: int) -> None:
        await super().scale_replica_set(namespace, name, replicas)
        self._ready(namespace, name, replicas)

    async def delete_replica_set(self, namespace: str, name: str) -> None:
        rs = self.store.get("ReplicaSet", name, namespace)
        await super().delete_replica_set(namespace, name)
        owner = objects.owner_name(rs, "Rollout") if rs else None
        if self.indexed and owner is not None:
            self._owned(namespace, owner).discard(name)

    def _ready(self, namespace: str, name: str, replicas: int) -> None:
        def change(rs: Obj) -> None:
            rs["status"] = {
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "observedGeneration": rs["metadata"].get("generation", 1),
            }

        self.store.mutate("ReplicaSet", name, namespace, change, status=True)


class InstantPlatform:
    """`rollouts.platform.protocols.Platform` against the store, without processes: see the module docstring."""

    name = "bench-instant"
    implicit_traffic_router = True  # like the embedded proxy: canaries are planned as traffic-routed

    def __init__(self, store: SqliteStore, *, indexed: bool = False) -> None:
        self.workloads = InstantWorkloads(store, indexed=indexed)
        self.services = EmbeddedServices(store)
        self.traffic = EmbeddedTraffic(store)

    def unsupported(self, rollout: Rollout) -> str | None:
        findings = validation.unsupported_features(rollout)
        return f"{findings[0].path}: {findings[0].message}" if findings else None


# --- filling a store ----------------------------------------------------------------------


def rollout_name(i: int) -> str:
    return f"ro-{i:05d}"


def _manifests(name: str, image: str) -> list[Obj]:
    svc = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": n, "namespace": NAMESPACE},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
        }
        for n in (name, f"{name}-canary")
    ]
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [demo_container(image)]}},
            "strategy": {
                "canary": {"stableService": name, "canaryService": f"{name}-canary", "steps": copy.deepcopy(STEPS)}
            },
        },
    }
    return [*svc, rollout]


def _template_hash(rollout: Obj) -> str:
    return pod_template_hash(rollout["spec"]["template"], 0)


async def _reference(workdir: Path) -> tuple[list[Obj], str]:
    """One rollout brought to Healthy by the real reconciler: its objects as stored, and its hash."""
    path = workdir / "reference.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = SqliteStore(path)
    try:
        name = rollout_name(0)
        for obj in _manifests(name, "rollouts-demo:v1"):
            store.create(obj)
        reconciler = RolloutReconciler(AsyncSqliteStore(store), InstantPlatform(store), utc_now)
        for _ in range(20):
            await reconciler.reconcile(NAMESPACE, name)
            if healthy(store.must_get("Rollout", name).get("status") or {}):
                break
        else:
            raise RuntimeError("the reference rollout did not become Healthy")
        for _ in range(3):  # settled: another reconcile writes nothing
            outcome = await reconciler.reconcile(NAMESPACE, name)
        if outcome.wrote_status:
            raise RuntimeError("the reference rollout's status keeps changing")
        found = [*store.list("Service"), *store.list("ReplicaSet"), store.must_get("Rollout", name)]
        return found, _template_hash(store.must_get("Rollout", name))
    finally:
        store.close()


def populate(path: Path, count: int, workdir: Path) -> float:
    """Fill `path` with `count` Healthy rollouts and their objects; returns seconds taken."""
    started = time.perf_counter()
    reference, ref_hash = asyncio.run(_reference(workdir))
    ref_name = rollout_name(0)
    texts = []
    for obj in reference:
        clean = copy.deepcopy(obj)
        for field in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            clean["metadata"].pop(field, None)
        texts.append((clean["kind"], json.dumps(clean)))
    store = SqliteStore(path)
    try:
        for i in range(count):
            name = rollout_name(i)
            new_hash = _template_hash(_manifests(name, "rollouts-demo:v1")[-1])
            uid = ""
            # Rollout first, so that the ReplicaSet's owner reference carries its uid.
            for kind, text in sorted(texts, key=lambda t: t[0] != "Rollout"):
                obj = json.loads(text.replace(ref_name, name).replace(ref_hash, new_hash))
                if kind == "ReplicaSet":
                    for ref in obj["metadata"].get("ownerReferences") or []:
                        ref["uid"] = uid
                created = store.create(obj)
                if kind == "Rollout":
                    uid = created["metadata"]["uid"]
    finally:
        store.close()
    return time.perf_counter() - started


# --- one measurement (child process) ------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50) * 1000,
        "p95": percentile(values, 95) * 1000,
        "p99": percentile(values, 99) * 1000,
        "max": max(values) * 1000,
        "mean": sum(values) / len(values) * 1000,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    count: int = args.count
    store = SqliteStore(args.state)
    platform = InstantPlatform(store, indexed=args.platform == "indexed")
    # As `EmbeddedHost` builds it: the store behind the async interface, the SQLite change feed polled.
    controller = Controller(AsyncSqliteStore(store), platform, {}, resync_seconds=args.resync, change_feed=store)
    pass_times: array[float] = array("d")
    steady_times: array[float] = array("d")
    pass_waits: array[float] = array("d")
    steady_waits: array[float] = array("d")
    pass_lags: array[float] = array("d")
    steady_lags: array[float] = array("d")
    seen: set[str] = set()
    phase = ["pass"]
    original = controller.rollouts.reconcile
    profiler = cProfile.Profile() if args.profile else None

    async def timed(namespace: str, name: str) -> Outcome:
        started = time.perf_counter()
        try:
            return await original(namespace, name)
        finally:
            (pass_times if phase[0] == "pass" else steady_times).append(time.perf_counter() - started)
            seen.add(name)

    controller.rollouts.reconcile = timed  # type: ignore[method-assign]

    def waited(key: tuple[str, str, str], seconds: float) -> None:
        if key[0] == "Rollout":
            (pass_waits if phase[0] == "pass" else steady_waits).append(seconds)

    controller.queue.observe_wait = waited
    if args.no_service_fanout:
        # What-if (bench-only): a Service change enqueues no rollout. `Controller._route`
        # enqueues every rollout of the namespace when a Service appears or goes (for a rollout
        # waiting, InvalidSpec, on a Service it lacked); none is waiting here.
        route = controller._route

        def route_without_service_fanout(change: Change) -> None:
            if change.kind != "Service":
                route(change)

        controller._route = route_without_service_fanout  # type: ignore[method-assign]
    writes: Counter[str] = Counter()
    updated_at: dict[str, float] = {}
    healthy_at: dict[str, float] = {}

    updated_hash: dict[str, str] = {}

    def on_change(change: Change) -> None:
        writes[f"{phase[0]}:{change.kind}"] += 1
        name = change.name
        if change.kind == "Rollout" and name in updated_hash and name not in healthy_at:
            status = (store.get("Rollout", name, change.namespace) or {}).get("status") or {}
            if healthy(status) and status.get("currentPodHash") == updated_hash[name]:
                healthy_at[name] = time.perf_counter()

    store.add_listener(on_change)
    if args.tracemalloc:
        tracemalloc.start()
    rss_before = rss_kib()
    heap_before = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    if profiler is not None and args.profile_pass:
        profiler.enable()
    task = asyncio.create_task(controller.run())

    burst_end = [0.0]  # the bench's own burst of `set image` writes is not the controller's lag

    async def lag_monitor() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            if before >= burst_end[0]:
                (pass_lags if phase[0] == "pass" else steady_lags).append(time.perf_counter() - before - 0.01)

    monitor = asyncio.create_task(lag_monitor())
    result: dict[str, Any] = {
        "count": count,
        "variant": args.variant,
        "platform": args.platform + (" +no-fanout" if args.no_service_fanout else ""),
    }
    try:
        # 1. The initial pass: every rollout queued at start, each reconciled once.
        deadline = t0 + args.pass_cap
        while len(seen) < count and time.perf_counter() < deadline and not task.done():
            await asyncio.sleep(0.05)
        pass_seconds = time.perf_counter() - t0
        result["pass"] = {
            "finished": len(seen) >= count,
            "reconciled": len(seen),
            "seconds": pass_seconds,
            "cpu": _cpu_seconds() - cpu0,
            "latency_ms": _summary(pass_times),
            "wait_ms": _summary(pass_waits),
            "loop_lag_ms": _summary(pass_lags),
        }
        if profiler is not None and args.profile_pass:
            profiler.disable()
        rss_after_pass = rss_kib()
        if args.variant == "pass-only":
            _memory(result, args, count, rss_before, heap_before)
            return result
        # 2. The steady window (the first resync falls in it); 10 % updated at its start.
        phase[0] = "steady"
        if profiler is not None and not args.profile_pass:
            profiler.enable()
        cpu1, t1 = _cpu_seconds(), time.perf_counter()
        if args.variant == "progressing":
            for i in range(0, count, 10):
                name = rollout_name(i)
                ro = store.must_get("Rollout", name, NAMESPACE)
                patch = patches.set_image(ro, "app", "rollouts-demo:v2")
                updated_hash[name] = _template_hash(patch.obj)
                updated_at[name] = time.perf_counter()
                store.update(patch.obj)
            burst_end[0] = time.perf_counter()
        end = t1 + args.window
        while time.perf_counter() < end and not task.done():
            await asyncio.sleep(0.1)
        if profiler is not None and not args.profile_pass:
            profiler.disable()
        steady_seconds = time.perf_counter() - t1
        result["steady"] = {
            "seconds": steady_seconds,
            "cpu": _cpu_seconds() - cpu1,
            "reconciles": len(steady_times),
            "latency_ms": _summary(steady_times),
            "wait_ms": _summary(steady_waits),
            "loop_lag_ms": _summary(steady_lags),
            "queue_left": len(controller.queue),
        }
        if updated_at:
            done = [healthy_at[n] - updated_at[n] for n in healthy_at]
            result["progress"] = {
                "updated": len(updated_at),
                "healthy": len(done),
                "seconds": _summary(done),
                "ideal_seconds": IDEAL_PROGRESS_SECONDS,
            }
        result["rss_after_pass_kib"] = rss_after_pass
        _memory(result, args, count, rss_before, heap_before)
        result["writes"] = dict(writes)
        return result
    finally:
        monitor.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if task.done() and not task.cancelled() and task.exception() is not None:
            result["error"] = repr(task.exception())
        store.close()
        result["load"] = list(os.getloadavg())
        if profiler is not None:
            result["profile"] = profile_text(profiler, args.profile)


def _memory(result: dict[str, Any], args: argparse.Namespace, count: int, rss_before: int, heap_before: int) -> None:
    """RSS growth since just before the controller started, per rollout; with tracemalloc, the
    Python heap still held (and its peak) per rollout."""
    gc.collect()
    result["rss_kib"] = {"before": rss_before, "end": rss_kib()}
    result["rss_per_rollout_kib"] = (result["rss_kib"]["end"] - rss_before) / count
    if args.tracemalloc:
        current, peak = tracemalloc.get_traced_memory()
        result["heap_per_rollout_kib"] = (current - heap_before) / 1024 / count
        result["heap_peak_per_rollout_kib"] = (peak - heap_before) / 1024 / count


# --- the benchmark (parent) ---------------------------------------------------------------


def _child(
    state: Path, count: int, variant: str, args: argparse.Namespace, *, trace: bool = False, profile: int = 0
) -> dict[str, Any]:
    work = state.with_name(f"{state.stem}-{variant}.db")
    shutil.copyfile(state, work)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--state",
        str(work),
        "--count",
        str(count),
        "--variant",
        variant,
        "--platform",
        args.platform,
        "--window",
        str(args.window),
        "--pass-cap",
        str(args.pass_cap),
        "--resync",
        str(args.resync),
    ]
    if args.no_service_fanout:
        cmd.append("--no-service-fanout")
    if trace:
        cmd.append("--tracemalloc")
    if profile:
        cmd += ["--profile", str(profile)]
        if args.profile_pass:
            cmd.append("--profile-pass")
    limit = args.pass_cap + args.window + 120
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(work) + suffix).unlink(missing_ok=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("SCALE-RESULT ")), None)
    if line is None:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(line.removeprefix("SCALE-RESULT "))
    return result


def _fmt(summary: dict[str, float], key: str) -> str:
    return f"{summary[key]:.1f}" if key in summary else "-"


def print_table(results: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'rollouts':>8} {'variant':<11} {'pass s':>8} {'pass p50':>8} {'p95':>7} {'p99':>7} {'max':>7} "
        f"{'steady n':>8} {'p50':>6} {'p95':>6} {'p99':>7} {'wait p50':>8} {'p99':>7} {'cpu s':>6} {'KiB/ro':>7} "
        f"{'heap':>6} {'load':>5}  progress"
    )
    for r in results:
        p = r["pass"]
        lat = p["latency_ms"]
        pass_s = f"{p['seconds']:.1f}" if p["finished"] else f">{p['seconds']:.0f}"
        steady = r.get("steady") or {}
        sl = steady.get("latency_ms") or {}
        sw = steady.get("wait_ms") or {}
        load = (r.get("load") or [float("nan")])[0]
        cpu = (p.get("cpu") or 0.0) + (steady.get("cpu") or 0.0)
        heap = r.get("heap_per_rollout_kib")
        progress = ""
        if "progress" in r:
            g = r["progress"]
            progress = f"{g['healthy']}/{g['updated']} done, p50 {_fmt(g['seconds'], 'p50')} p99 {_fmt(g['seconds'], 'p99')} ms"
        print(
            f"{r['count']:8d} {r['variant']:<11} {pass_s:>8} {_fmt(lat, 'p50'):>8} {_fmt(lat, 'p95'):>7} "
            f"{_fmt(lat, 'p99'):>7} {_fmt(lat, 'max'):>7} {steady.get('reconciles', 0):8d} {_fmt(sl, 'p50'):>6} "
            f"{_fmt(sl, 'p95'):>6} {_fmt(sl, 'p99'):>7} {_fmt(sw, 'p50'):>8} {_fmt(sw, 'p99'):>7} {cpu:6.1f} "
            f"{r.get('rss_per_rollout_kib', float('nan')):7.2f} {'-' if heap is None else f'{heap:.2f}':>6} "
            f"{load:5.2f}  {progress}"
        )
    print("latencies in ms; pass = the initial pass over every rollout (> = not finished, capped);")
    print("steady = the window after it (resync included); wait = a Rollout key's time in the work queue before")
    print("its reconcile (not in the reconcile latencies); KiB/ro = RSS growth / rollouts; heap = tracemalloc;")
    print("load = 1-minute load average at the child's end (2 cores, shared)")


def scrape_bench(state: Path, count: int) -> dict[str, float]:
    """Milliseconds per /metrics scrape of the rollout gauges (see --scrape in the docstring)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from rollouts.controller.admin import ControllerMetrics, _RolloutInfo

    store = SqliteStore(state)
    try:

        def timed(scrape: Callable[[], bytes], repeat: int = 1) -> float:
            best = float("inf")
            for _ in range(repeat):
                gc.collect()
                started = time.perf_counter()
                scrape()
                best = min(best, time.perf_counter() - started)
            return best * 1000

        before = _RolloutInfo(AsyncSqliteStore(store))
        before._feed = None  # every rollout listed and decoded per scrape, as before the cache
        registry = CollectorRegistry()
        registry.register(before)
        result = {"before": timed(lambda: generate_latest(registry), 3)}
        metrics = ControllerMetrics()
        metrics.watch_store(AsyncSqliteStore(store))
        result["first"] = timed(metrics.render)
        result["unchanged"] = timed(metrics.render, 3)
        result["unchanged_generate_latest"] = timed(lambda: generate_latest(metrics.registry), 3)
        for i in range(max(1, count // 100)):
            store.mutate(
                "Rollout", rollout_name(i), NAMESPACE, lambda o: o["status"].update(updatedReplicas=1), status=True
            )
        result["after_1pct_written"] = timed(metrics.render)
        result["bytes"] = float(len(metrics.render()))
        return result
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--variants", default="idle,progressing")
    parser.add_argument("--platform", choices=("embedded", "indexed"), default="embedded")
    parser.add_argument("--window", type=float, default=40.0, help="steady window after the initial pass (s)")
    parser.add_argument("--pass-cap", type=float, default=120.0, help="longest initial pass waited for (s)")
    parser.add_argument("--resync", type=float, default=30.0, help="controller resync period (s)")
    parser.add_argument(
        "--no-service-fanout",
        action="store_true",
        help="what-if: a Service write enqueues no rollout (bench-only patch of Controller._route)",
    )
    parser.add_argument("--tracemalloc", action="store_true", help="also a tracemalloc run per size (idle)")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        help="also cProfile each variant's steady window at the largest size; print N lines",
    )
    parser.add_argument("--profile-pass", action="store_true", help="with --profile: profile the initial pass instead")
    parser.add_argument("--scrape", action="store_true", help="time /metrics scrapes of the rollout gauges instead")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(measure(args))
        print("SCALE-RESULT " + json.dumps(result), flush=True)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    what_if = "; what-if: no Service fan-out" if args.no_service_fanout else ""
    print(f"controller scale: {machine()}; platform {args.platform}{what_if}", flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="controller-scale-") as tmp:
        for count in sizes:
            state = Path(tmp) / f"state-{count}.db"
            seconds = populate(state, count, Path(tmp))
            size_mib = state.stat().st_size / 2**20
            print(f"{count} rollouts: store filled in {seconds:.1f}s ({size_mib:.1f} MiB)", flush=True)
            if args.scrape:
                t = scrape_bench(state, count)
                print(
                    f"  scrape ms: before (list + decode + format every rollout) {t['before']:.1f}; now: first "
                    f"{t['first']:.1f}, nothing written {t['unchanged']:.1f}, after 1 % written "
                    f"{t['after_1pct_written']:.1f} ({t['bytes'] / 2**20:.1f} MiB; cached rows through "
                    f"generate_latest {t['unchanged_generate_latest']:.1f})",
                    flush=True,
                )
                continue
            for variant in variants:
                r = _child(state, count, variant, args)
                results.append(r)
                _progress_line(r)
            if args.tracemalloc:
                r = _child(state, count, "pass-only", args, trace=True)
                print(
                    f"  tracemalloc run (initial pass only): Python heap held "
                    f"{r.get('heap_per_rollout_kib', float('nan')):.2f} KiB/rollout, peak "
                    f"{r.get('heap_peak_per_rollout_kib', float('nan')):.2f} KiB/rollout; RSS growth "
                    f"{r.get('rss_per_rollout_kib', float('nan')):.2f} KiB/rollout",
                    flush=True,
                )
                for earlier in results:
                    if earlier["count"] == count:
                        earlier["heap_per_rollout_kib"] = r.get("heap_per_rollout_kib")
        if args.profile:
            state = Path(tmp) / f"state-{sizes[-1]}.db"
            for variant in variants:
                r = _child(state, sizes[-1], variant, args, profile=args.profile)
                what = "initial pass" if args.profile_pass else "steady window"
                print(f"\ncProfile of the {what}, {variant}, {sizes[-1]} rollouts (top {args.profile}):")
                print(r.get("profile", ""))
    if results:
        print_table(results)
    return 0


def _progress_line(r: dict[str, Any]) -> None:
    p = r["pass"]
    line = (
        f"  {r['variant']}: pass {'done' if p['finished'] else 'NOT done'} ({p['reconciled']}/{r['count']}) "
        f"in {p['seconds']:.1f}s, p99 {_fmt(p['latency_ms'], 'p99')} ms (queue wait p99 {_fmt(p['wait_ms'], 'p99')} ms, "
        f"loop lag p99 {_fmt(p['loop_lag_ms'], 'p99')} max {_fmt(p['loop_lag_ms'], 'max')} ms)"
    )
    if "steady" in r:
        s = r["steady"]
        line += (
            f"; steady {s['reconciles']} reconciles, p99 {_fmt(s['latency_ms'], 'p99')} ms "
            f"(queue wait p99 {_fmt(s['wait_ms'], 'p99')} ms, loop lag p99 {_fmt(s['loop_lag_ms'], 'p99')} "
            f"max {_fmt(s['loop_lag_ms'], 'max')} ms), queue left {s['queue_left']}"
        )
    if "progress" in r:
        g = r["progress"]
        line += f"; progressed {g['healthy']}/{g['updated']}"
    if "error" in r:
        line += f"; ERROR {r['error']}"
    line += f"; load {' '.join(f'{x:.2f}' for x in r.get('load') or [])}"
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
