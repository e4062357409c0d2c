"""Runs the whole embedded stack in one process: store, runtime (pods + proxy), controller.

`rollouts controller` and `rollouts demo` both start an `EmbeddedHost`. It owns everything
it starts and stops all of it on `close()`, so no pod process or listener outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from rollouts.analysis.providers import default_providers
from rollouts.config import state_dir_for
from rollouts.controller.manager import Controller, utc_now
from rollouts.platform.embedded.platform import EmbeddedPlatform
from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.proxy_metrics import ProxyMetrics
from rollouts.platform.embedded.runtime import EmbeddedRuntime
from rollouts.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


class EmbeddedHost:
    def __init__(
        self,
        state_path: Path,
        *,
        admin_port: int = 0,
        prometheus_address: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.state_path = state_path
        self.admin_port_wanted = admin_port
        self.admin_port = 0
        self.store = SqliteStore(state_path)
        self.proxy = ProxyServer(ProxyMetrics())
        self.runtime = EmbeddedRuntime(self.store, state_dir_for(state_path), self.proxy)
        self.platform = EmbeddedPlatform(self.store)
        self.providers = default_providers(prometheus_address=prometheus_address)
        self.controller = Controller(self.store, self.platform, self.providers, clock=clock)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.admin_port = await self.proxy.start_admin(self.admin_port_wanted)
        self.store.add_listener(self.runtime.on_store_change)
        await self.runtime.start()
        self._task = asyncio.create_task(self.controller.run(), name="controller")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.runtime.close()
        for provider in self.providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        self.store.close()

    async def __aenter__(self) -> EmbeddedHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
