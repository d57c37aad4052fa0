"""cancel_and_wait: ends tasks, even one that drops a cancel, and never eats the
caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from clickrelay.common.aiotasks import cancel_and_wait


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


async def test_a_task_that_drops_one_cancel_is_cancelled_again() -> None:
    dropped = asyncio.Event()

    async def drops_the_first() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            dropped.set()  # as wait_for does on Python 3.11 when its awaitable is done
        await asyncio.Event().wait()

    task = asyncio.create_task(drops_the_first())
    await asyncio.sleep(0)  # let it reach its first await
    async with asyncio.timeout(30):
        await cancel_and_wait(task, recancel=0.05)
    assert dropped.is_set()
    assert task.cancelled()


async def test_a_timeout_around_it_still_fires() -> None:
    release = asyncio.Event()

    async def never_ends_on_cancel() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores every cancellation

    task = asyncio.create_task(never_ends_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await cancel_and_wait(task, recancel=0.05)
    assert not task.done()
    release.set()
    await task
