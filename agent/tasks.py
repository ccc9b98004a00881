"""Stopping asyncio tasks for sure.

``task.cancel()`` followed by ``gather`` can wait forever on Python 3.11: its
``asyncio.wait_for`` (which pymodbus, asyncua and the standard streams use)
drops a cancellation that arrives as the awaited result does (CPython issue
gh-86296), and the task then runs on as if nothing happened. A gateway that
hangs on stop is killed by the watchdog instead of stopping cleanly, so every
stop goes through :func:`cancel_and_wait`, which cancels again until the task
is really done.

A task's own clean-up (its ``finally``) may await too; a second cancel would
cut it short. So the first cancel gets ``every_s`` to work, and outer layers
(the agent stopping a driver) give more time than inner ones (a driver
stopping its workers), so the inner layer's repeat comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

INNER_EVERY_S = 0.2  # a driver stopping its own workers
OUTER_EVERY_S = 3.0  # the agent stopping drivers and its own tasks


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], every_s: float = INNER_EVERY_S, within_s: float = 10.0
) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` until each is done; return those still running after ``within_s``."""
    pending = [t for t in tasks if not t.done()]
    everything = list(pending)
    rounds = max(1, round(within_s / every_s))
    for _ in range(rounds):
        if not pending:
            break
        for t in pending:
            t.cancel()
        _done, still = await asyncio.wait(pending, timeout=every_s)
        pending = list(still)
    finished = [t for t in everything if t.done()]
    # Collect results and exceptions, so none is reported as never retrieved.
    await asyncio.gather(*finished, return_exceptions=True)
    return pending
