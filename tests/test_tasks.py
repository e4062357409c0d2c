"""`stop_task`: a stopped task is ended, whatever it does with the first cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from rollouts import tasks
from rollouts.tasks import stop_task

T = 5.0  # bound of each test, seconds (each ends in well under one)


async def test_a_task_that_ends_at_the_first_cancel_is_stopped() -> None:
    async with asyncio.timeout(T):
        task = asyncio.create_task(asyncio.sleep(60))
        await asyncio.sleep(0)
        await stop_task(task)
        assert task.cancelled()


async def test_a_task_that_swallows_a_cancel_is_cancelled_again_until_it_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "GRACE", 0.05)
    monkeypatch.setattr(tasks, "RECANCEL_EVERY", 0.01)
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise

    async with asyncio.timeout(T):
        task = asyncio.create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0)
        with caplog.at_level(logging.WARNING, logger="rollouts.tasks"):
            await stop_task(task)
        assert task.cancelled() and swallowed == 3
        assert [r.getMessage() for r in caplog.records] == [
            "task stubborn still runs 0 s after it was cancelled: cancelling it again"
        ]


async def test_a_task_cleaning_up_after_the_cancel_is_given_the_grace_to_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "GRACE", 1.0)
    cleaned = asyncio.Event()

    async def cleans_up() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # (a second cancel here would cut the cleanup short)
            cleaned.set()

    async with asyncio.timeout(T):
        task = asyncio.create_task(cleans_up())
        await asyncio.sleep(0)
        await stop_task(task)
        assert cleaned.is_set() and task.cancelled()


async def test_a_cancellation_of_the_caller_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    ignore_cancels = asyncio.Event()

    async def unstoppable() -> None:
        while not ignore_cancels.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    monkeypatch.setattr(tasks, "RECANCEL_EVERY", 0.01)
    task = asyncio.create_task(unstoppable())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(stop_task(task))
    await asyncio.sleep(0.05)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stopper, T)
    ignore_cancels.set()
    task.cancel()
    await asyncio.wait([task], timeout=T)
    assert task.done()


async def test_the_failure_of_a_stopped_task_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(fails(), name="worker")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="rollouts.tasks"):
        await asyncio.wait_for(stop_task(task), T)
    assert [r.getMessage() for r in caplog.records] == ["task worker had failed before it was stopped"]


async def test_a_finished_task_is_left_as_it_is() -> None:
    task = asyncio.create_task(asyncio.sleep(0, result=7))
    await task
    await asyncio.wait_for(stop_task(task), T)
    assert task.result() == 7


async def test_several_tasks_are_stopped_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "GRACE", 0.05)
    monkeypatch.setattr(tasks, "RECANCEL_EVERY", 0.01)
    lost = 0

    async def loses_one_cancel() -> None:
        nonlocal lost
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            lost += 1
        await asyncio.sleep(60)

    async with asyncio.timeout(T):
        plain = asyncio.create_task(asyncio.sleep(60))
        stubborn = asyncio.create_task(loses_one_cancel())
        done = asyncio.create_task(asyncio.sleep(0))
        await asyncio.sleep(0.01)
        await tasks.stop_tasks([plain, stubborn, done])
        assert plain.cancelled() and stubborn.cancelled() and lost == 1
        assert done.done() and not done.cancelled()
