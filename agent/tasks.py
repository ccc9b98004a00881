"""Stopping asyncio tasks for sure.

``task.cancel()`` followed by ``gather`` can wait forever on Python 3.11: its
``asyncio.wait_for`` (which pymodbus, asyncua and the standard streams use)
drops a cancellation that arrives as the awaited result does (CPython issue
gh-86296), and the task then runs on as if nothing happened. A gateway that
hangs on stop is killed by the watchdog instead of stopping cleanly, so every
stop goes through :func:`cancel_and_wait`, which cancels again until the task
is really done.

A task's own clean-up (its ``finally``) may await too, and a second cancel
would cut it short. So a driver stopping its workers (the inner layer)
finishes within ``INNER_WITHIN_S``, and its closing calls sit in a
``finally`` of their own; the agent stopping a driver (the outer layer)
repeats its cancel only every ``OUTER_EVERY_S``, longer than any driver's
clean-up, so a repeat reaches only a task that really lost the first one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

INNER_EVERY_S = 0.2  # a driver stopping its own workers
INNER_WITHIN_S = 2.0
OUTER_EVERY_S = 5.0  # the agent stopping drivers and its own tasks


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]],
    every_s: float = INNER_EVERY_S,
    within_s: float = INNER_WITHIN_S,
) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` until each is done; return those still running after ``within_s``.

    If the caller is itself cancelled meanwhile, the tasks still running are
    cancelled once more and the caller's cancellation goes on up.
    """
    everything = list(tasks)
    pending = [t for t in everything if not t.done()]
    rounds = max(1, round(within_s / every_s))
    try:
        for _ in range(rounds):
            if not pending:
                break
            for t in pending:
                t.cancel()
            _done, still = await asyncio.wait(pending, timeout=every_s)
            pending = list(still)
    except asyncio.CancelledError:
        for t in pending:
            t.cancel()
            t.add_done_callback(_retrieve)
        raise
    for t in everything:
        if t.done():
            _retrieve(t)
        else:
            t.add_done_callback(_retrieve)
    return pending


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a finished task's exception as seen (no 'never retrieved' warning)."""
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()
