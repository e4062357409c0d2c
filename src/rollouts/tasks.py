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
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_EVERY = 0.1  # seconds between cancels of a task that has not ended yet


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again while it runs on.
    A cancellation of the caller propagates. The task's own exception is logged, not raised:
    whoever stops a task wants it gone, and a failure it had is no reason to stop the stopping."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_EVERY)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task %s had failed before it was stopped", task.get_name(), exc_info=exc)
