"""drivers.base.supervise: the one reconnect loop every source runs its sessions under."""

from __future__ import annotations

import asyncio

from cityedge.backoff import Backoff
from cityedge.drivers.base import supervise


async def test_losses_are_reported_and_backed_off_restarts_are_immediate() -> None:
    """A session's reason goes to lost() and costs a backoff delay; None restarts at once."""
    outcomes: list[str | None] = ["refused", None, "reset by peer"]
    reported: list[str] = []
    sessions = 0
    done = asyncio.Event()
    backoff = Backoff(base_s=0.01, cap_s=0.02)

    async def session() -> str | None:
        nonlocal sessions
        sessions += 1
        if outcomes:
            return outcomes.pop(0)
        done.set()
        await asyncio.sleep(10)  # a healthy session: serves until cancelled
        return None

    async def lost(reason: str) -> None:
        reported.append(reason)

    task = asyncio.create_task(supervise(session, backoff, lost))
    await asyncio.wait_for(done.wait(), 2.0)
    assert reported == ["refused", "reset by peer"]
    assert sessions == 4
    assert backoff.attempt == 2  # one delay per loss, none for the restart
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_a_failing_loss_report_does_not_end_the_reconnects() -> None:
    """lost() raising (a full disk under the sink) is logged; the sessions go on."""
    calls = 0
    done = asyncio.Event()

    async def session() -> str | None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            done.set()
            await asyncio.sleep(10)
        return "lost"

    async def lost(reason: str) -> None:
        raise OSError(28, "No space left on device")

    task = asyncio.create_task(supervise(session, Backoff(base_s=0.01, cap_s=0.02), lost))
    await asyncio.wait_for(done.wait(), 2.0)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_reset_backoff_starts_short_again() -> None:
    """A session that came up resets the backoff: the next loss waits from the base again."""
    backoff = Backoff(base_s=0.01, cap_s=10.0)
    calls = 0
    done = asyncio.Event()

    async def session() -> str | None:
        nonlocal calls
        calls += 1
        if calls == 4:
            backoff.reset()  # the transport came up
        if calls >= 5:
            done.set()
            await asyncio.sleep(10)
        return "lost"

    async def lost(reason: str) -> None:
        pass

    task = asyncio.create_task(supervise(session, backoff, lost))
    await asyncio.wait_for(done.wait(), 2.0)
    assert backoff.attempt == 1  # counted again from 0 after the reset
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
