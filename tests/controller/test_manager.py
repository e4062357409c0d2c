"""The controller's routing of store changes into its work queue (no reconciles run here).

The queue is replaced by one that records what is added and never hands a key to a worker,
so each test sees exactly which keys a change queues.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from rollouts.controller.manager import Controller, Key
from rollouts.controller.queue import BACKGROUND_EVERY, WorkQueue
from rollouts.platform.embedded.platform import EmbeddedPlatform
from rollouts.store.protocol import AsyncSqliteStore
from rollouts.store.sqlite import SqliteStore


class RecordingQueue(WorkQueue[Key]):
    def __init__(self) -> None:
        super().__init__()
        self.added: list[Key] = []

    def add(self, key: Key, *, background: bool = False) -> None:
        self.added.append(key)
        super().add(key, background=background)

    async def run(self, worker: Callable[[Key], Awaitable[None]], concurrency: int = 8) -> None:
        await asyncio.Event().wait()


def rollout(name: str, namespace: str = "default") -> dict[str, Any]:
    return {"kind": "Rollout", "metadata": {"name": name, "namespace": namespace}, "spec": {}}


def service(name: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name}, "spec": {"selector": {"app": name}}}


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, SqliteStore, Callable[[], Controller]]]:
    """(the controller's store, a second process's store on the same file, start)."""
    own, other = SqliteStore(tmp_path / "state.db"), SqliteStore(tmp_path / "state.db")
    tasks: list[asyncio.Task[None]] = []

    def start() -> Controller:
        controller = Controller(AsyncSqliteStore(own), EmbeddedPlatform(own), {}, poll_interval=0.01, change_feed=own)
        controller.queue = RecordingQueue()
        tasks.append(asyncio.create_task(controller.run()))
        return controller

    yield own, other, start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    own.close()
    other.close()


def added(controller: Controller) -> list[Key]:
    queue = controller.queue
    assert isinstance(queue, RecordingQueue)
    return queue.added


async def test_the_poll_routes_only_writes_from_other_processes(running: Any) -> None:
    own, other, start = running
    controller = start()
    await asyncio.sleep(0)
    own.create(rollout("mine"))  # routed at once by the listener
    other.create(rollout("theirs"))  # reaches the controller through the change feed only
    await until(lambda: ("Rollout", "default", "theirs") in added(controller))
    # The poll that found "theirs" read "mine" too, and did not queue it a second time.
    assert added(controller).count(("Rollout", "default", "mine")) == 1
    assert added(controller).count(("Rollout", "default", "theirs")) == 1


async def test_only_a_service_appearing_or_going_requeues_the_namespace(running: Any) -> None:
    own, other, start = running
    own.create(rollout("a"))
    own.create(rollout("b"))
    own.create(rollout("elsewhere", "prod"))
    own.create(service("web"))
    controller = start()
    await asyncio.sleep(0)
    assert set(added(controller)) == {
        ("Rollout", "default", "a"),
        ("Rollout", "default", "b"),
        ("Rollout", "prod", "elsewhere"),
    }
    added(controller).clear()
    # A write to a Service that existed at start (the controller's own weight and selector
    # writes are such) is no appearance.
    own.mutate("Service", "web", None, lambda svc: svc["spec"]["selector"].update(hash="1"))
    assert added(controller) == []
    other.mutate("Service", "web", None, lambda svc: svc["spec"]["selector"].update(hash="2"))
    other.create(service("marker"))  # appears: once the poll has routed it, it has read the writes before
    namespace = [("Rollout", "default", "a"), ("Rollout", "default", "b")]
    await until(lambda: len(added(controller)) >= 2)
    assert added(controller) == namespace
    added(controller).clear()
    other.delete("Service", "web")
    await until(lambda: len(added(controller)) >= 2)
    assert added(controller) == namespace
    added(controller).clear()
    own.create(service("web"))  # back again, written in-process: routed by the listener
    assert added(controller) == namespace


async def test_enqueue_all_queues_every_rollout_and_run(running: Any) -> None:
    own, _other, start = running
    own.create(rollout("a", "prod"))
    own.create({"kind": "AnalysisRun", "metadata": {"name": "a-1", "namespace": "prod"}, "spec": {}})
    controller = start()
    await asyncio.sleep(0)
    assert added(controller) == [("Rollout", "prod", "a"), ("AnalysisRun", "prod", "a-1")]


async def test_queue_wait_is_observed_once_per_take_from_the_first_add() -> None:
    queue: WorkQueue[str] = WorkQueue()
    waits: list[tuple[str, float]] = []
    queue.observe_wait = lambda key, seconds: waits.append((key, seconds))
    done = asyncio.Event()

    async def worker(key: str) -> None:
        done.set()

    queue.add("k")
    await asyncio.sleep(0.05)
    queue.add("k")  # already waiting: no new wait starts
    runner = asyncio.create_task(queue.run(worker))
    try:
        await asyncio.wait_for(done.wait(), 5.0)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert [key for key, _ in waits] == ["k"]
    assert waits[0][1] >= 0.05


async def test_background_keys_wait_for_the_front_lane() -> None:
    """Resync keys (background) are taken after every key a change or a timer queued; a
    background key added again normally moves up; each key is still processed once."""
    queue: WorkQueue[str] = WorkQueue()
    taken: list[str] = []
    done = asyncio.Event()

    async def worker(key: str) -> None:
        taken.append(key)
        if len(taken) == 5:
            done.set()

    for key in ("idle-1", "idle-2", "idle-3"):
        queue.add(key, background=True)
    queue.add("progressing")
    queue.add("idle-3")  # changed meanwhile: now in the front lane
    queue.add("progressing", background=True)  # already waiting in front: stays there, once
    queue.add("other")
    assert len(queue) == 5
    runner = asyncio.create_task(queue.run(worker, concurrency=1))
    try:
        await asyncio.wait_for(done.wait(), 5.0)
        await asyncio.sleep(0.05)  # a duplicate, if any, would be taken now
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert taken == ["progressing", "idle-3", "other", "idle-1", "idle-2"]
    assert len(queue) == 0


async def test_background_keys_are_not_starved_by_a_busy_front_lane() -> None:
    queue: WorkQueue[str] = WorkQueue()
    taken: list[str] = []
    done = asyncio.Event()

    async def worker(key: str) -> None:
        taken.append(key)
        if key.startswith("front"):
            queue.add(key)  # a progressing rollout keeps requeueing itself
        if len(taken) == 3 * BACKGROUND_EVERY:
            done.set()

    queue.add("resync-1", background=True)
    queue.add("resync-2", background=True)
    queue.add("front-a")
    queue.add("front-b")
    runner = asyncio.create_task(queue.run(worker, concurrency=1))
    try:
        await asyncio.wait_for(done.wait(), 5.0)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    first = taken[: 3 * BACKGROUND_EVERY]
    assert [i for i, key in enumerate(first) if key.startswith("resync")] == [
        BACKGROUND_EVERY - 1,
        2 * BACKGROUND_EVERY - 1,
    ]
