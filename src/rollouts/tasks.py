"""Stopping a background task so that it is really stopped.

`task.cancel()` then `with suppress(CancelledError): await task` has two flaws, and one of
them hung a whole CI run: on Python 3.11 `asyncio.wait_for` drops a cancellation that arrives
as the awaited operation completes (gh-86296, fixed in 3.12), so a supervising loop can survive
its one cancel and await its next child forever; and `suppress` also swallows a cancellation of
the caller itself, so a caller's timeout cannot cut the wait short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

# A cancelled task gets this long to clean up before it is cancelled again: a second cancel
# interrupts its cleanup (a child being reaped, say), so it is for a task that lost the first.
GRACE = 5.0  # seconds
RECANCEL_EVERY = 1.0  # seconds, after the grace


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended; if it is still running `GRACE` seconds later
    (it lost the cancel), cancel it again, every `RECANCEL_EVERY` seconds, until it ends.
    A cancellation of the caller propagates. The task's own exception is logged, not raised:
    whoever stops a task wants it gone, and a failure it had is no reason to stop the stopping."""
    await stop_tasks([task])


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """`stop_task` for several tasks at once (they clean up concurrently)."""
    tasks = list(tasks)
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running, timeout=GRACE)
    late = [task for task in running if not task.done()]
    for task in late:
        log.warning("task %s still runs %.0f s after it was cancelled: cancelling it again", task.get_name(), GRACE)
    while late:
        for task in late:
            task.cancel()
        await asyncio.wait(late, timeout=RECANCEL_EVERY)
        late = [task for task in late if not task.done()]
    for task in tasks:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task %s had failed before it was stopped", task.get_name(), exc_info=exc)
