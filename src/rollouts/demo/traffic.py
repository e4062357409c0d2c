"""Steady traffic through a Service, counting what the platform failed and what the app failed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class TrafficStats:
    sent: int = 0
    ok: int = 0
    app_errors: int = 0  # 500s answered by the application (v3's bug)
    platform_failures: int = 0  # connection errors, 502/503/504: requests the platform lost
    versions: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> TrafficStats:
        return TrafficStats(self.sent, self.ok, self.app_errors, self.platform_failures, Counter(self.versions))


class TrafficGenerator:
    def __init__(self, url: str, rate: float = 50.0, concurrency: int = 8) -> None:
        self.url = url
        self.rate = rate
        self.concurrency = concurrency
        self.stats = TrafficStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def _worker(self, client: httpx.AsyncClient, period: float) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.stats.sent += 1
            try:
                response = await client.get(self.url)
                if response.status_code == 200:
                    self.stats.ok += 1
                    self.stats.versions[response.json().get("version", "?")] += 1
                elif response.status_code in (502, 503, 504):
                    self.stats.platform_failures += 1
                else:
                    self.stats.app_errors += 1
            except (httpx.HTTPError, ValueError):
                self.stats.platform_failures += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=5.0)
        period = self.concurrency / self.rate
        self._tasks = [asyncio.create_task(self._worker(self._client, period)) for _ in range(self.concurrency)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
