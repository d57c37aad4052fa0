"""Waiting for a condition with a deadline, never a fixed sleep: one sync and one async form.

Every wait fails with :class:`DeadlinePassed` (an AssertionError, so pytest shows it as a
failed check) whose message says what was awaited; ``failure`` lets a caller put the
latest process log into that message.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlinePassed(AssertionError):
    """A polled condition did not come true in time."""


def _message(what: str, within: float, failure: Callable[[], str] | None) -> str:
    text = f"timed out after {within:g}s waiting for: {what}"
    return f"{text}\n{failure()}" if failure is not None else text


def poll(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "",
    failure: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something other than
    None, and return that. After ``timeout`` seconds: :class:`DeadlinePassed` naming
    ``what`` and adding ``failure()`` (called then, so it can show the latest log).
    ``check`` may raise to fail early.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise DeadlinePassed(_message(what or repr(check), timeout, failure))
        time.sleep(interval)  # polling a condition with a deadline, not synchronising


def wait_until(
    condition: Callable[[], bool],
    within: float = 30.0,
    what: str = "",
    *,
    interval: float = 0.02,
    failure: Callable[[], str] | None = None,
) -> None:
    """:func:`poll` for a condition that is true or false."""
    poll(
        lambda: True if condition() else None,
        timeout=within,
        interval=interval,
        what=what or repr(condition),
        failure=failure,
    )


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str = "",
    within: float = 30.0,
    *,
    interval: float = 0.02,
    failure: Callable[[], str] | None = None,
) -> None:
    """Await ``condition`` (plain or async) until true, yielding to the event loop between
    checks; :class:`DeadlinePassed` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            name = what or getattr(condition, "__name__", repr(condition))
            raise DeadlinePassed(_message(name, within, failure))
        await asyncio.sleep(interval)
