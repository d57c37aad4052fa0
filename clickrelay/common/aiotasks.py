"""Ending background tasks without losing the caller's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

#: Seconds between cancellations of a task that has not ended yet.
RECANCEL_INTERVAL = 1.0


async def cancel_and_wait(*tasks: asyncio.Task[Any], recancel: float = RECANCEL_INTERVAL) -> None:
    """Cancel ``tasks`` and wait until they have ended.

    Two traps this avoids:

    * ``task.cancel(); with suppress(CancelledError): await task`` also swallows a
      cancellation aimed at the caller, so a shutdown timeout around it never fires.
      ``asyncio.wait`` lets the caller's cancellation through and leaves the tasks'
      own CancelledError in the tasks.
    * On Python 3.11, ``asyncio.wait_for`` (used inside dnspython and asyncpg) drops a
      cancellation that arrives just as what it waits for completes; the task then
      runs on as if never cancelled. A task still running after ``recancel`` seconds
      is cancelled again.
    """
    pending = set(tasks)
    for task in pending:
        task.cancel()
    while pending:
        done, pending = await asyncio.wait(pending, timeout=recancel)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: asyncio does not log it as lost
        for task in pending:
            task.cancel()
