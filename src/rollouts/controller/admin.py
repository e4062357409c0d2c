"""The controller's own HTTP endpoints: `/healthz` and `/metrics` (Prometheus text format).

Kept apart from the data plane: on Kubernetes the controller has no proxy, and the probes
must answer on every replica, leader or not (the embedded host serves the same registry on
its admin listener, next to the proxy's metrics). Metrics follow Argo's names and labels
(reference e): `rollout_info` and its replica gauges, `rollout_phase` (deprecated in Argo, kept
for dashboards), `rollout_reconcile` (histogram), `rollout_reconcile_error`,
`rollout_events_total`, and `rollout_duration_seconds`: how long updates took, by how they
ended (label `status`: Promoted, FastPromoted, Aborted, Superseded, RolledBack,
FastRolledBack), with the rollout's namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rollouts.controller.cached_metrics import CachedCounter, CachedHistogram, escape_label
from rollouts.core.plan import UpdateOutcome
from rollouts.store.protocol import ResourceStore
from rollouts.store.sqlite import Change

# Updates last from seconds (a fast-track) to hours (pauses waiting for a person).
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """`registry`: share one (the embedded host serves the proxy's metrics from it too)."""
        self.registry = registry if registry is not None else _Registry(self)
        # (the per-rollout families that grow with the rollouts: rendered from cached lines)
        self.reconcile = CachedHistogram(
            "rollout_reconcile",
            "Rollout reconciliation performance.",
            ["namespace", "name"],
            buckets=(0.01, 0.15, 0.25, 0.5, 1.0),
        )
        self.registry.register(self.reconcile)
        self.reconcile_error = Counter(
            "rollout_reconcile_error",
            "Error occurring during the rollout",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.leader = Gauge("rollouts_controller_leader", "1 when this replica holds the lease", registry=self.registry)
        self.events = CachedCounter(
            "rollout_events_total", "Events recorded on rollouts.", ["namespace", "name", "type", "reason"]
        )
        self.registry.register(self.events)
        self.duration = Histogram(
            "rollout_duration_seconds",
            "How long rollout updates took, by how they ended (status: the completion status).",
            ["namespace", "status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

        self._rollout_info: _RolloutInfo | None = None

    def watch_store(self, store: ResourceStore) -> None:
        self._rollout_info = _RolloutInfo(store)
        self.registry.register(self._rollout_info)

    def render(self) -> bytes:
        """The registry's text exposition (format 0.0.4), as `generate_latest` gives it, but with
        the per-rollout gauges from their pre-rendered lines: formatting their ~11 samples per
        rollout on each scrape took ~1.3 s at 10,000 rollouts (bench/RESULTS.md)."""
        info = self._rollout_info
        cached = (self.reconcile, self.events)
        rollouts = ""
        if info is not None:
            rollouts = info.render()  # (first: it learns which rollouts exist)
            self._forget_deleted(info.keys())
        for family in cached:
            family.set_silenced(True)
        try:
            if info is None:
                rest = generate_latest(self.registry)
            else:
                with info.silenced():
                    rest = generate_latest(self.registry)
        finally:
            for family in cached:
                family.set_silenced(False)
        return bytes(rest) + "".join(family.render() for family in cached).encode() + rollouts.encode()

    def _forget_deleted(self, existing: set[tuple[str, str]]) -> None:
        """Drop the per-rollout reconcile series of rollouts that no longer exist, as Argo does
        on deletion (a reconcile of a deleted rollout, its garbage collection, observes too)."""
        gone = (self.reconcile.rollouts() | self.events.rollouts()) - existing
        if not gone:
            return
        self.reconcile.retain(existing)
        self.events.retain(existing)
        for namespace, name in gone:
            with contextlib.suppress(KeyError):
                self.reconcile_error.remove(namespace, name)

    def observe_outcome(self, namespace: str, outcome: UpdateOutcome) -> None:
        """Count an update that ended (a planner outcome); one whose start is unknown is skipped."""
        if outcome.seconds is not None:
            self.duration.labels(namespace, outcome.completion_status).observe(outcome.seconds)


# rollout_info's phase, as Argo's metrics derive it from the Progressing condition (not status.phase).
INFO_PHASES = ("Completed", "Progressing", "Paused", "Timeout", "Error", "Abort")
_PHASE_BY_REASON = {
    "NewReplicaSetAvailable": "Completed",
    "RolloutPaused": "Paused",
    "ServiceNotFound": "Error",
    "ReplicaSetCreateError": "Error",
    "ProgressDeadlineExceeded": "Timeout",
    "RolloutAborted": "Abort",
}
# trafficRouting fields in the order Argo's metrics name the router.
_ROUTERS: tuple[tuple[str, str], ...] = (
    ("alb", "ALB"),
    ("ambassador", "Ambassador"),
    ("istio", "Istio"),
    ("nginx", "Nginx"),
    ("smi", "SMI"),
    ("appMesh", "AppMesh"),
)


def info_phase(status: dict[str, Any]) -> str:
    """Argo's metrics phase: Completed, Progressing, Paused, Timeout, Error, Abort or InvalidSpec."""
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    if "InvalidSpec" in conditions:
        return "InvalidSpec"
    reason = (conditions.get("Progressing") or {}).get("reason")
    return _PHASE_BY_REASON.get(str(reason), "Progressing")


def traffic_router(spec: dict[str, Any]) -> str:
    routing = ((spec.get("strategy") or {}).get("canary") or {}).get("trafficRouting") or {}
    return next((label for key, label in _ROUTERS if routing.get(key)), "")


class _Registry(CollectorRegistry):
    """A registry that knows how to render itself fast (`ControllerMetrics.render`): the
    embedded host's admin listener serves it through `render` when the registry has one."""

    def __init__(self, metrics: ControllerMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render(self) -> bytes:
        return self._metrics.render()


class ChangeFeed(Protocol):
    """What the SQLite store offers to follow its writes (keys only, any process's)."""

    def current_rv(self) -> int: ...

    def changes_since(self, rv: int) -> tuple[list[Change], int]: ...


@dataclass(frozen=True)
class _Row:
    """One rollout's samples, computed once per stored version."""

    labels: tuple[str, str]
    strategy: str
    router: str
    phase: str
    available: float
    unavailable: float
    desired: float
    updated: float


# The per-rollout families, in exposition order: (name, help).
_FAMILIES = (
    ("rollout_info", "Information about rollout."),
    ("rollout_phase", "Information on the state of the rollout (DEPRECATED - use rollout_info)"),
    *(
        (f"rollout_info_replicas_{k}", f"The number of {k} replicas.")
        for k in ("available", "unavailable", "desired", "updated")
    ),
)


def _line(name: str, labels: dict[str, str], value: float) -> str:
    """One sample as `generate_latest` writes it (labels sorted by name)."""
    pairs = ",".join(f'{k}="{escape_label(v)}"' for k, v in sorted(labels.items()))
    # repr of a float is what floatToGoString writes for these counts and 0/1 (below 1e16).
    return f"{name}{{{pairs}}} {float(value)!r}\n"


def _lines(row: _Row) -> tuple[str, ...]:
    """The row's samples per family of `_FAMILIES`, rendered once per stored version."""
    key = {"namespace": row.labels[0], "name": row.labels[1]}
    info = _line("rollout_info", {**key, "strategy": row.strategy, "traffic_router": row.router, "phase": row.phase}, 1)
    phases = "".join(
        _line("rollout_phase", {**key, "strategy": row.strategy, "phase": c}, 1.0 if c == row.phase else 0.0)
        for c in INFO_PHASES
    )
    replicas = (
        _line(f"rollout_info_replicas_{kind}", key, value)
        for kind, value in (
            ("available", row.available),
            ("unavailable", row.unavailable),
            ("desired", row.desired),
            ("updated", row.updated),
        )
    )
    return (info, phases, *replicas)


def _row(ro: dict[str, Any]) -> _Row:
    meta = ro.get("metadata") or {}
    spec = ro.get("spec") or {}
    status = ro.get("status") or {}
    strategy_spec = spec.get("strategy") or {}
    strategy = "canary" if "canary" in strategy_spec else "blueGreen" if "blueGreen" in strategy_spec else "none"
    total, available = int(status.get("replicas") or 0), int(status.get("availableReplicas") or 0)
    desired = spec.get("replicas")
    return _Row(
        labels=(str(meta.get("namespace") or "default"), str(meta.get("name", ""))),
        strategy=strategy,
        router=traffic_router(spec),
        phase=info_phase(status),
        available=float(available),
        unavailable=float(total - available),
        desired=float(1 if desired is None else desired),
        updated=float(status.get("updatedReplicas") or 0),
    )


def _change_feed(store: ResourceStore) -> ChangeFeed | None:
    """The SQLite store's change feed behind `store`, if it has one (the embedded host's)."""
    for candidate in (store, getattr(store, "sqlite", None)):
        if callable(getattr(candidate, "changes_since", None)) and callable(getattr(candidate, "current_rv", None)):
            return cast(ChangeFeed, candidate)
    return None


class _RolloutInfo(Collector):
    """rollout_info, rollout_phase and the replica gauges, from the stored rollouts.

    With a change feed (the SQLite store), each rollout is decoded once per written version: a
    scrape reads the keys written since the previous one (an indexed read, written by any
    process, deletions included) and decodes only those rollouts. Listing and decoding every
    rollout on each scrape held the event loop for ~0.5 s at 10,000 rollouts (bench/RESULTS.md).
    Without one (the Kubernetes store: an in-memory cache) every rollout is read per scrape."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store
        self._feed = _change_feed(store)
        self._rows: dict[tuple[str, str], _Row] = {}  # (namespace, name) -> samples
        # (namespace, name) -> the row and its rendered lines (stale once the row is replaced)
        self._lines: dict[tuple[str, str], tuple[_Row, tuple[str, ...]]] = {}
        self._rv: int | None = None  # the feed's version the rows reflect; None: not read yet
        self._silenced = False

    @contextlib.contextmanager
    def silenced(self) -> Iterator[None]:
        """`collect` yields nothing meanwhile (`render` writes these families itself)."""
        self._silenced = True
        try:
            yield
        finally:
            self._silenced = False

    def render(self) -> str:
        """The families' text exposition, from each rollout's lines rendered once per version."""
        rendered = []
        for row in self._refresh():
            cached = self._lines.get(row.labels)
            if cached is None or cached[0] is not row:
                cached = (row, _lines(row))
                if self._feed is not None:  # without a feed every row is new on each scrape
                    self._lines[row.labels] = cached
            rendered.append(cached[1])
        parts = []
        for index, (name, help_) in enumerate(_FAMILIES):
            parts.append(f"# HELP {name} {help_}\n# TYPE {name} gauge\n")
            parts.extend(lines[index] for lines in rendered)
        return "".join(parts)

    def keys(self) -> set[tuple[str, str]]:
        """(namespace, name) of the rollouts as of the last `render` or `collect`."""
        return set(self._rows)

    def _refresh(self) -> list[_Row]:
        if self._feed is None:
            self._rows = {row.labels: row for row in map(_row, self.store.list("Rollout"))}
            return list(self._rows.values())
        if self._rv is None:
            self._rv = self._feed.current_rv()  # before the list: no write falls between the two
            self._rows = {}
            for ro in self.store.list("Rollout"):
                row = _row(ro)
                self._rows[row.labels] = row
        else:
            changes, self._rv = self._feed.changes_since(self._rv)
            for namespace, name in {(c.namespace, c.name) for c in changes if c.kind == "Rollout"}:
                obj = self.store.get("Rollout", name, namespace)
                if obj is None:
                    self._rows.pop((namespace or "default", name), None)
                    self._lines.pop((namespace or "default", name), None)
                else:
                    row = _row(obj)
                    self._rows[row.labels] = row
        # The order the store lists rollouts in (by name), as before the cache.
        return sorted(self._rows.values(), key=lambda r: (r.labels[1], r.labels[0]))

    def collect(self) -> Iterator[Metric]:
        if self._silenced:
            return
        key = ["namespace", "name"]
        info = GaugeMetricFamily(
            "rollout_info", "Information about rollout.", labels=[*key, "strategy", "traffic_router", "phase"]
        )
        phase_gauge = GaugeMetricFamily(
            "rollout_phase",
            "Information on the state of the rollout (DEPRECATED - use rollout_info)",
            labels=[*key, "strategy", "phase"],
        )
        replicas = {
            kind: GaugeMetricFamily(f"rollout_info_replicas_{kind}", f"The number of {kind} replicas.", labels=key)
            for kind in ("available", "unavailable", "desired", "updated")
        }
        for row in self._refresh():
            labels = list(row.labels)
            info.add_metric([*labels, row.strategy, row.router, row.phase], 1)
            for candidate in INFO_PHASES:
                phase_gauge.add_metric([*labels, row.strategy, candidate], 1.0 if candidate == row.phase else 0.0)
            replicas["available"].add_metric(labels, row.available)
            replicas["unavailable"].add_metric(labels, row.unavailable)
            replicas["desired"].add_metric(labels, row.desired)
            replicas["updated"].add_metric(labels, row.updated)
        yield info
        yield phase_gauge
        yield from replicas.values()


class AdminServer:
    """A minimal HTTP/1.1 server for probes and scraping (no framework: two fixed routes)."""

    def __init__(self, metrics: ControllerMetrics, healthy: Callable[[], bool] = lambda: True) -> None:
        self.metrics = metrics
        self.healthy = healthy
        self._servers: list[asyncio.Server] = []

    async def start(self, host: str, port: int) -> int:
        server = await asyncio.start_server(self._handle, host, port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            path = request.split(b" ", 2)[1].decode(errors="replace") if request.count(b" ") >= 2 else "/"
            if path.startswith("/metrics"):
                status, body, ctype = "200 OK", self.metrics.render(), "text/plain; version=0.0.4"
            elif path.startswith("/healthz"):
                ok = self.healthy()
                status, body, ctype = (
                    ("200 OK" if ok else "503 Service Unavailable"),
                    (b"ok" if ok else b"unhealthy"),
                    "text/plain",
                )
            else:
                status, body, ctype = "404 Not Found", b"not found", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
