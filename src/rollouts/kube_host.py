"""Runs the controller as a Kubernetes operator: informers, the Kubernetes platform, a Lease.

`rollouts controller --platform kubernetes` starts a `KubeHost`. Every replica serves
`/healthz` and `/metrics`; only the holder of the Lease reconciles. A leader that cannot
renew stops acting and the process exits, as client-go controllers do.

Scope: `namespace` (None: all namespaces) limits every informer, and `instance_id` the
Rollouts and AnalysisRuns acted on (`rollouts.model.scope`). The Lease is named after the
instance id (`leader.lease_name`) and lives in the controller's own namespace
(`lease_namespace_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path

from rollouts.analysis.providers import default_providers
from rollouts.controller.admin import AdminServer, ControllerMetrics
from rollouts.controller.manager import Controller
from rollouts.platform.kubernetes.api import KubeApi, load_api_client
from rollouts.platform.kubernetes.job_provider import KubeJobProvider
from rollouts.platform.kubernetes.leader import KubeLeaderElector, lease_name
from rollouts.platform.kubernetes.platform import KubernetesPlatform
from rollouts.platform.kubernetes.store import KubeStore
from rollouts.tasks import stop_tasks

log = logging.getLogger(__name__)

# Where a pod's service account token mounts its namespace (what client-go's in-cluster config reads).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def lease_namespace_for(
    watched: str | None,
    *,
    in_cluster: bool = True,
    env: Mapping[str, str] | None = None,
    service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE,
) -> str:
    """The controller's own namespace, where its Lease lives: $POD_NAMESPACE (the Deployment's
    downward API), else, in a pod (no --kubeconfig), its service account's namespace, else the
    watched namespace, else "default"."""
    environ = os.environ if env is None else env
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    mounted = ""
    if in_cluster:
        with contextlib.suppress(OSError):
            mounted = service_account_file.read_text().strip()
    return mounted or watched or "default"


class KubeHost:
    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        instance_id: str | None = None,
        leader_elect: bool = True,
        lease_namespace: str | None = None,
        identity: str | None = None,
        metrics_port: int = 8090,
        healthz_port: int = 8080,
        bind: str = "0.0.0.0",
        prometheus_address: str | None = None,
        lease_duration: float = 15.0,
        renew_interval: float = 10.0,
        renew_deadline: float = 12.0,
        retry_period: float = 2.0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.namespace = namespace
        self.instance_id = instance_id or None
        self.leader_elect = leader_elect
        self.lease_namespace = lease_namespace or lease_namespace_for(namespace, in_cluster=kubeconfig is None)
        self.lease_name = lease_name(self.instance_id)
        self.identity = identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.metrics_port_wanted = metrics_port
        self.healthz_port_wanted = healthz_port
        self.bind = bind
        self.prometheus_address = prometheus_address
        self.lease_timings = (lease_duration, renew_interval, renew_deadline, retry_period)
        self.metrics = ControllerMetrics()
        self.admin = AdminServer(self.metrics)
        self.metrics_port = 0
        self.healthz_port = 0
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._tasks: list[asyncio.Task[object]] = []
        self.api: KubeApi | None = None
        self.store: KubeStore | None = None
        self.elector: KubeLeaderElector | None = None
        self.controller: Controller | None = None

    async def start(self) -> None:
        self.metrics_port = await self.admin.start(self.bind, self.metrics_port_wanted)
        self.healthz_port = (
            self.metrics_port
            if self.healthz_port_wanted == self.metrics_port_wanted
            else await self.admin.start(self.bind, self.healthz_port_wanted)
        )
        self.api = KubeApi(await load_api_client(self.kubeconfig, self.context))
        duration, renew, deadline, retry = self.lease_timings
        if self.leader_elect:
            self.elector = KubeLeaderElector(
                self.api,
                self.identity,
                namespace=self.lease_namespace,
                name=self.lease_name,
                lease_duration=duration,
                renew_interval=renew,
                renew_deadline=deadline,
                retry_period=retry,
            )
            await self.elector.acquire()
            self._tasks.append(asyncio.create_task(self._hold(), name="lease"))
        self.store = KubeStore(self.api, self.namespace, instance_id=self.instance_id)
        self.metrics.watch_store(self.store)
        await self.store.start()
        platform = KubernetesPlatform(self.store)
        providers = default_providers(prometheus_address=self.prometheus_address)
        # On a cluster, `job` metrics run as batch/v1 Jobs, not local processes.
        providers[KubeJobProvider.kind] = KubeJobProvider(self.api, namespace=self.namespace or "default")
        self.controller = Controller(
            self.store,
            platform,
            providers,
            leading=self.elector.is_leader if self.elector else None,
            metrics=self.metrics,
        )
        self.metrics.leader.set(1)
        self._tasks.append(asyncio.create_task(self.controller.run(), name="controller"))

    async def _hold(self) -> None:
        assert self.elector is not None
        reason = await self.elector.hold()
        self.lost_reason = reason
        self.metrics.leader.set(0)
        log.error("lost leadership (%s): stopping", reason)
        if self.controller is not None:
            for task in self._tasks:
                if task.get_name() == "controller":
                    task.cancel()
        self.lost.set()

    async def close(self) -> None:
        await stop_tasks(self._tasks)
        if self.store is not None:
            await self.store.stop()
        if self.api is not None:
            await self.api.close()
        await self.admin.close()
