"""A work queue keyed by resource: deduplicated, one worker per key, delayed requeues.

Like client-go's rate-limited queue, minus the rate limit: a key added while it is being
processed is processed once more afterwards (never concurrently), and a key added many
times while waiting is processed once. `add_after` schedules a key for later; an earlier
schedule wins over a later one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._waiting: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._due: dict[K, float] = {}

    def add(self, key: K) -> None:
        if key in self._active:
            self._again.add(key)
            return
        if key in self._waiting:
            return
        self._waiting.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: K, seconds: float) -> None:
        if seconds <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + seconds
        if key in self._due and self._due[key] <= due:
            return
        if key in self._timers:
            self._timers[key].cancel()
        self._due[key] = due

        def fire() -> None:
            self._timers.pop(key, None)
            self._due.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_at(due, fire)

    def __len__(self) -> int:
        return len(self._waiting)

    async def run(self, worker: Callable[[K], Awaitable[None]], concurrency: int = 8) -> None:
        """Process keys forever with up to `concurrency` keys in flight."""
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def process(key: K) -> None:
            try:
                await worker(key)
            finally:
                self._active.discard(key)
                slots.release()
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)

        try:
            while True:
                key = await self._queue.get()
                await slots.acquire()
                self._waiting.discard(key)
                self._active.add(key)
                task = asyncio.create_task(process(key))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            for timer in self._timers.values():
                timer.cancel()
