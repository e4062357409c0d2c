"""A work queue keyed by resource: deduplicated, one worker per key, delayed requeues.

Like client-go's rate-limited queue, minus the rate limit: a key added while it is being
processed is processed once more afterwards (never concurrently), and a key added many
times while waiting is processed once. `add_after` schedules a key for later; an earlier
schedule wins over a later one.

Two lanes: keys added with `background=True` (the periodic resync and the initial listing of
every object) are taken when no other key waits, and at least one in every `BACKGROUND_EVERY`
keys taken while both lanes have keys, so that neither lane can starve the other. Every key is
still processed; only the order changes, so that a rollout that is progressing (woken by a
change or a requeue timer) does not wait behind thousands of idle ones queued by a resync. A
background key that is added again normally moves to the front lane.

`observe_wait`, when set, is told for each key taken how long it waited since it was queued
(client-go's `workqueue_queue_duration_seconds`), so that reconcile time and queue time can
be reported apart: a reconcile's own latency says nothing about a key stuck behind others.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

BACKGROUND_EVERY = 8


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        # Waiting keys, each True when in the front lane. A lane's deque may hold stale entries
        # (a key moved to the front lane, or already taken): they are skipped when popped.
        self._waiting: dict[K, bool] = {}
        self._front: deque[K] = deque()
        self._back: deque[K] = deque()
        self._ready = asyncio.Event()
        self._active: set[K] = set()
        self._again: dict[K, bool] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._due: dict[K, float] = {}
        self._queued_at: dict[K, float] = {}
        self._front_streak = 0  # front keys taken in a row while background keys waited
        self.observe_wait: Callable[[K, float], None] | None = None

    def add(self, key: K, *, background: bool = False) -> None:
        front = not background
        if key in self._active:
            self._again[key] = self._again.get(key, False) or front
            return
        waiting = self._waiting.get(key)
        if waiting is not None:
            if front and not waiting:
                self._waiting[key] = True
                self._front.append(key)
            return
        self._waiting[key] = front
        self._queued_at[key] = time.perf_counter()
        (self._front if front else self._back).append(key)
        self._ready.set()

    def _take(self) -> K | None:
        """The next waiting key (see the module docstring); None when none waits."""
        if self._front_streak >= BACKGROUND_EVERY - 1:
            key = self._pop(self._back, front=False)
            if key is not None:
                self._front_streak = 0
                return key
        key = self._pop(self._front, front=True)
        if key is not None:
            self._front_streak += 1 if self._back else 0
            return key
        self._front_streak = 0
        return self._pop(self._back, front=False)

    def _pop(self, lane: deque[K], *, front: bool) -> K | None:
        while lane:
            key = lane.popleft()
            if self._waiting.get(key) is front:
                del self._waiting[key]
                return key
        return None

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
                again = self._again.pop(key, None)
                if again is not None:
                    self.add(key, background=not again)

        try:
            while True:
                await slots.acquire()
                key = self._take()
                while key is None:
                    self._ready.clear()
                    await self._ready.wait()
                    key = self._take()
                queued_at = self._queued_at.pop(key, None)
                if self.observe_wait is not None and queued_at is not None:
                    self.observe_wait(key, time.perf_counter() - queued_at)
                self._active.add(key)
                task = asyncio.create_task(process(key))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                # Let the loop poll I/O before the next key starts. A reconcile against the
                # embedded store never suspends, so without this up to `concurrency`
                # reconciles ran back to back in one loop turn (a stall of 70-260 ms for the
                # proxy sharing the loop, measured at 1,000 rollouts); with it, a stall is one
                # reconcile. Reconciles that do wait on I/O (Kubernetes) still overlap.
                await asyncio.sleep(0)
        finally:
            for task in tasks:
                task.cancel()
            for timer in self._timers.values():
                timer.cancel()
