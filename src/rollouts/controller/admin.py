"""The controller's own HTTP endpoints: `/healthz` and `/metrics` (Prometheus text format).

Kept apart from the data plane: on Kubernetes the controller has no proxy, and the probes
must answer on every replica, leader or not. Metrics follow Argo's names (reference e):
`rollout_info`, `rollout_reconcile` (histogram), `rollout_reconcile_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rollouts.store.protocol import ResourceStore


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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

    def watch_store(self, store: ResourceStore) -> None:
        self.registry.register(_RolloutInfo(store))


class _RolloutInfo(Collector):
    """rollout_info and replica gauges, computed from the store when scraped."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    def collect(self):  # type: ignore[no-untyped-def]
        info = GaugeMetricFamily(
            "rollout_info", "Information about rollout.", labels=["namespace", "name", "strategy", "phase"]
        )
        desired = GaugeMetricFamily("rollout_info_replicas_desired", "Desired replicas.", labels=["namespace", "name"])
        available = GaugeMetricFamily(
            "rollout_info_replicas_available", "Available replicas.", labels=["namespace", "name"]
        )
        for ro in self.store.list("Rollout"):
            meta = ro.get("metadata") or {}
            namespace, name = str(meta.get("namespace", "default")), str(meta.get("name", ""))
            strategy = "canary" if "canary" in ((ro.get("spec") or {}).get("strategy") or {}) else "blueGreen"
            status = ro.get("status") or {}
            info.add_metric([namespace, name, strategy, str(status.get("phase", "Progressing"))], 1)
            desired.add_metric([namespace, name], float((ro.get("spec") or {}).get("replicas", 1)))
            available.add_metric([namespace, name], float(status.get("availableReplicas", 0)))
        yield info
        yield desired
        yield available


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
