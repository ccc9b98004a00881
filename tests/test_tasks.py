"""cancel_and_wait: a task that loses a cancellation is cancelled again, never waited on forever."""

from __future__ import annotations

import asyncio

from cityedge.tasks import cancel_and_wait


async def test_a_swallowed_cancel_is_repeated() -> None:
    """A task that drops its first cancel (as 3.11's wait_for can) still ends."""
    swallowed = 0

    async def stubborn() -> str:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 1:
                    continue  # the cancellation is lost, as in gh-86296
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], every_s=0.05, within_s=2.0) == []
    assert task.cancelled() and swallowed == 2


async def test_a_task_ignoring_every_cancel_is_reported_not_awaited() -> None:
    """Bounded: after within_s the task is returned as still running."""
    stop = asyncio.Event()

    async def deaf() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await cancel_and_wait([task], every_s=0.05, within_s=0.3) == [task]
    assert loop.time() - t0 < 2.0
    stop.set()
    task.cancel()
    await asyncio.wait([task], timeout=2.0)
    assert task.done()


async def test_results_and_errors_are_collected() -> None:
    """Finished tasks' exceptions are retrieved (no 'never retrieved' warning)."""

    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task]) == []
    assert isinstance(task.exception(), ValueError)
