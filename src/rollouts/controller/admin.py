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
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rollouts.core.plan import UpdateOutcome
from rollouts.store.protocol import ResourceStore

# Updates last from seconds (a fast-track) to hours (pauses waiting for a person).
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """`registry`: share one (the embedded host serves the proxy's metrics from it too)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconcile = Histogram(
            "rollout_reconcile",
            "Rollout reconciliation performance.",
            ["namespace", "name"],
            buckets=(0.01, 0.15, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.reconcile_error = Counter(
            "rollout_reconcile_error",
            "Error occurring during the rollout",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.leader = Gauge("rollouts_controller_leader", "1 when this replica holds the lease", registry=self.registry)
        self.events = Counter(
            "rollout_events_total",
            "Events recorded on rollouts.",
            ["namespace", "name", "type", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "rollout_duration_seconds",
            "How long rollout updates took, by how they ended (status: the completion status).",
            ["namespace", "status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def watch_store(self, store: ResourceStore) -> None:
        self.registry.register(_RolloutInfo(store))

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


class _RolloutInfo(Collector):
    """rollout_info, rollout_phase and the replica gauges, computed from the store when scraped."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
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
        for ro in self.store.list("Rollout"):
            meta = ro.get("metadata") or {}
            spec = ro.get("spec") or {}
            status = ro.get("status") or {}
            labels = [str(meta.get("namespace") or "default"), str(meta.get("name", ""))]
            strategy_spec = spec.get("strategy") or {}
            strategy = (
                "canary" if "canary" in strategy_spec else "blueGreen" if "blueGreen" in strategy_spec else "none"
            )
            phase = info_phase(status)
            info.add_metric([*labels, strategy, traffic_router(spec), phase], 1)
            for candidate in INFO_PHASES:
                phase_gauge.add_metric([*labels, strategy, candidate], 1.0 if candidate == phase else 0.0)
            total, available = int(status.get("replicas") or 0), int(status.get("availableReplicas") or 0)
            desired = spec.get("replicas")
            replicas["available"].add_metric(labels, float(available))
            replicas["unavailable"].add_metric(labels, float(total - available))
            replicas["desired"].add_metric(labels, float(1 if desired is None else desired))
            replicas["updated"].add_metric(labels, float(status.get("updatedReplicas") or 0))
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
                status, body, ctype = "200 OK", generate_latest(self.metrics.registry), "text/plain; version=0.0.4"
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
