"""Ending background tasks without losing the caller's own cancellation."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(*tasks: asyncio.Task[object] | asyncio.Task[None]) -> None:
    """Cancel ``tasks`` and wait until they have ended.

    The common ``task.cancel(); with suppress(CancelledError): await task`` also
    swallows a cancellation aimed at the caller (a shutdown timeout around it then
    never fires). ``gather(return_exceptions=True)`` keeps the tasks' own
    CancelledError as a result and lets the caller's propagate.
    """
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
