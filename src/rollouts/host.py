"""Runs the whole embedded stack in one process: store, runtime (pods + proxy), controller.

`rollouts controller` and `rollouts demo` both start an `EmbeddedHost`. It owns everything
it starts and stops all of it on `close()`, so no pod process or listener outlives it.

Leadership: several hosts may be started on one state file; exactly one acts. `start()` first
acquires the controller lease (`rollouts.store.lease`) and only then starts the admin
listener, the runtime (which adopts the pods a previous leader left running) and the
controller; a follower waits in `start()` doing nothing else. A leader that loses the lease
stops acting at once: the controller loop is cancelled and the runtime detached (pods keep
running for the next leader to adopt, listeners close), and `lost` is set with the reason in
`lost_reason`. The process should then exit, as Kubernetes controllers do (`rollouts
controller` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from rollouts.analysis.providers import default_providers
from rollouts.config import state_dir_for
from rollouts.controller.admin import ControllerMetrics
from rollouts.controller.manager import Controller, utc_now
from rollouts.platform.embedded.dataplane import DataPlane
from rollouts.platform.embedded.platform import EmbeddedPlatform
from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.proxy_metrics import ProxyMetrics
from rollouts.platform.embedded.proxy_process import ProxyProcess
from rollouts.platform.embedded.runtime import EmbeddedRuntime
from rollouts.store.lease import DEFAULT_LEASE_DURATION, DEFAULT_RENEW_INTERVAL, LeaderElector
from rollouts.store.protocol import AsyncSqliteStore
from rollouts.store.sqlite import SqliteStore
from rollouts.tasks import stop_task

log = logging.getLogger(__name__)


class EmbeddedHost:
    def __init__(
        self,
        state_path: Path,
        *,
        admin_port: int = 0,
        prometheus_address: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        identity: str | None = None,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        lease_renew_interval: float = DEFAULT_RENEW_INTERVAL,
        proxy_process: bool = False,
    ) -> None:
        """`proxy_process`: run the data plane (the proxy) in a child process of its own, so
        that a busy controller does not stall proxied requests (`proxy_process`); the admin
        listener stays in this process and shows both processes' metrics."""
        self.state_path = state_path
        self.admin_port_wanted = admin_port
        self.admin_port = 0
        self.store = SqliteStore(state_path)
        self.elector = LeaderElector(
            self.store, identity, lease_duration=lease_duration, renew_interval=lease_renew_interval
        )
        # One registry: the admin listener's /metrics shows the controller's metrics and the proxy's.
        self.metrics = ControllerMetrics()
        self.proxy: DataPlane
        if proxy_process:
            self.proxy = ProxyProcess(self.metrics.registry)
        else:
            self.proxy = ProxyServer(ProxyMetrics(self.metrics.registry))
        self.runtime = EmbeddedRuntime(
            self.store, state_dir_for(state_path), self.proxy, leading=self.elector.is_leader
        )
        self.platform = EmbeddedPlatform(self.store)
        self.providers = default_providers(prometheus_address=prometheus_address)
        store = AsyncSqliteStore(self.store)
        self.metrics.watch_store(store)
        self.controller = Controller(
            store,
            self.platform,
            self.providers,
            clock=clock,
            leading=self.elector.is_leader,
            change_feed=self.store,
            metrics=self.metrics,
        )
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def identity(self) -> str:
        return self.elector.identity

    async def start(self) -> None:
        """Wait to lead, then start serving and reconciling (see the module docstring)."""
        await self.elector.acquire()
        self.metrics.leader.set(1)
        self._lease_task = asyncio.create_task(self._hold_lease(), name="controller-lease")
        self.admin_port = await self._start_admin()
        self.store.add_listener(self.runtime.on_store_change)
        await self.runtime.start()
        self._task = asyncio.create_task(self.controller.run(), name="controller")

    async def _start_admin(self) -> int:
        """The admin listener; after taking the lease over from a leader that may still be
        exiting (it was frozen, not killed), its port is waited for up to one lease duration."""
        loop = asyncio.get_running_loop()
        patience = self.elector.lease_duration if self.elector.taken_from else 0.0
        deadline = loop.time() + patience
        while True:
            try:
                return await self.proxy.start_admin(self.admin_port_wanted)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or loop.time() >= deadline:
                    raise
                log.warning("admin port %d in use (by the previous leader?): retrying", self.admin_port_wanted)
                await asyncio.sleep(0.5)

    async def _hold_lease(self) -> None:
        reason = await self.elector.hold()
        log.error("controller %s lost leadership: %s; it stops acting now", self.identity, reason)
        self.lost_reason = reason
        self.metrics.leader.set(0)
        if self._closing:  # close() is stopping everything already
            return
        await self._stop_controller()
        with contextlib.suppress(Exception):
            await self.runtime.detach()
        self.lost.set()

    async def _stop_controller(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def close(self) -> None:
        """Stop everything this host started, pods included, then give the lease up."""
        self._closing = True
        await self._stop_controller()
        if not self.lost.is_set():
            await self.runtime.close()  # the lease is still renewed while pods stop
        if self._lease_task is not None:
            await stop_task(self._lease_task)
        for provider in self.providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        if isinstance(self.proxy, ProxyProcess):
            await self.proxy.close()  # (closed already unless start failed early: no orphan child)
        # Pods are stopped: a follower may take over at once instead of waiting for expiry.
        self.elector.release()
        self.store.close()

    async def __aenter__(self) -> EmbeddedHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
