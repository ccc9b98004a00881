"""cancel_and_wait: a task that loses a cancellation is cancelled again, never waited on forever."""

from __future__ import annotations

import asyncio
import gc

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


async def _never_retrieved(use_cancel_and_wait: bool) -> list[str]:
    """Messages the loop reports for a failed task after it is dropped."""

    async def fails() -> None:
        raise ValueError("boom")

    loop = asyncio.get_running_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(str(ctx.get("message"))))
    try:
        task = asyncio.create_task(fails())
        await asyncio.sleep(0)  # it has failed before anybody stops it
        if use_cancel_and_wait:
            assert await cancel_and_wait([task]) == []
        del task
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    return [m for m in seen if "never retrieved" in m]


async def test_errors_of_finished_tasks_are_retrieved() -> None:
    """A task that already failed is not reported as 'exception never retrieved'."""
    assert await _never_retrieved(use_cancel_and_wait=False)  # the control: asyncio reports it
    assert await _never_retrieved(use_cancel_and_wait=True) == []


async def test_an_interrupted_stop_still_cancels_and_lets_clean_up_run() -> None:
    """The outer layer cancelling again mid-stop: workers are cancelled, closing code runs."""
    closed: list[bool] = []

    async def worker() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(5)  # a clean-up slower than anybody waits for

    async def driver() -> None:
        w = asyncio.create_task(worker())
        try:
            await asyncio.sleep(10)
        finally:
            try:
                await cancel_and_wait([w], every_s=1.0, within_s=3.0)
            finally:
                closed.append(True)  # the port or socket is closed whatever happens above
                workers.append(w)

    workers: list[asyncio.Task[None]] = []
    task = asyncio.create_task(driver())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.1)  # the driver is inside cancel_and_wait, its worker cleaning up
    task.cancel()  # the outer layer's repeat
    await asyncio.wait([task], timeout=2.0)
    assert task.done() and closed == [True]
    await asyncio.wait(workers, timeout=2.0)
    assert workers[0].done()  # cancelled once more: its slow clean-up was cut short


async def test_a_hanging_stop_names_each_pending_task_and_where_it_waits() -> None:
    """The agent's last word before the watchdog: every pending task, with its frames."""
    from structlog.testing import capture_logs

    from cityedge.agent import _log_pending_tasks

    async def stuck_in_close() -> None:
        await asyncio.sleep(10)

    task = asyncio.create_task(stuck_in_close(), name="modbus:pump-7")
    await asyncio.sleep(0)
    try:
        with capture_logs() as logs:
            _log_pending_tasks()
    finally:
        task.cancel()
    mine = [e for e in logs if e.get("task") == "modbus:pump-7"]
    assert len(mine) == 1 and mine[0]["event"] == "stop_hanging_task"
    assert mine[0]["log_level"] == "error"
    assert any("stuck_in_close" in w and "test_tasks.py:" in w for w in mine[0]["where"])
