"""cancel_and_wait: ends tasks, and never eats the caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from redirector.aiotasks import cancel_and_wait


async def test_cancelled_and_failed_tasks_end_without_raising() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("boom")

    tasks = [asyncio.create_task(forever()), asyncio.create_task(fails())]
    await asyncio.sleep(0)  # both start; one has failed already
    await cancel_and_wait(*tasks)
    assert tasks[0].cancelled()
    assert isinstance(tasks[1].exception(), RuntimeError)
    await cancel_and_wait()  # nothing to do is fine


async def test_a_timeout_around_it_still_fires_when_a_task_ignores_cancel() -> None:
    ignored = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ignored.set()  # swallows the cancel, as wait_for can on Python 3.11
            await asyncio.Event().wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # let it reach its first await
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await cancel_and_wait(task)
    assert ignored.is_set()
    # gather passed the caller's cancellation on to the task, so it has ended too.
    assert task.cancelled()
