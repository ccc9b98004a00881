"""The uplink against a real Mosquitto: every accepted reading arrives, through outages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cityedge.config.model import UplinkConfig
from cityedge.outbox import Outbox
from cityedge.pipeline import Writer
from cityedge.readings import Priority, Reading
from cityedge.uplink.sender import Sender
from tests.peers.mqtt import Broker, Recorder


def reading(device: str, n: int) -> Reading:
    return Reading(device, "counter", n, "1", datetime.now(UTC), family="energy", cell="c")


class Rig:
    def __init__(self, tmp: Path, port: int, **cfg: object) -> None:
        self.executor = ThreadPoolExecutor(1)
        self.outbox = Outbox(tmp / "outbox.sqlite", max_bytes=1 << 30, durability="normal")
        self.outbox.open()
        self.writer = Writer(self.outbox, self.executor, commit_interval_s=0.005)
        ucfg = UplinkConfig(
            port=port,
            batch_max_readings=50,
            batch_max_age_s=0.05,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
            **cfg,  # type: ignore[arg-type]
        )
        self.sender = Sender(ucfg, self.outbox, self.executor, gateway_id="gw1", site_id="s1")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Rig]:
        tasks = [asyncio.create_task(self.writer.run()), asyncio.create_task(self.sender.run())]
        try:
            yield self
        finally:
            await self.sender.stop()
            await asyncio.wait_for(tasks[1], 10)
            tasks[0].cancel()
            await asyncio.gather(tasks[0], return_exceptions=True)
            self.outbox.close()
            self.executor.shutdown()


async def until(pred, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
async def test_every_reading_arrives(
    tmp_path: Path, broker: Broker, recorder: Recorder, protocol: str
) -> None:
    """Readings submitted to the writer all reach a subscriber, in order per device."""
    rig = Rig(tmp_path, broker.port, protocol=protocol)
    async with rig.running():
        for n in range(300):
            await rig.writer.submit([reading("a", n), reading("b", n)])
        await until(lambda: rig.sender.stats.readings_acked >= 600)
    got = recorder.wait_for(600)
    for dev in ("a", "b"):
        values = [r["value"] for r in got if r["device"] == dev]
        assert values == list(range(300))
    seqs = [r["seq"] for r in got]
    assert len(set(seqs)) == 600


async def test_broker_outage_loses_nothing_and_live_goes_first(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """Broker down then up: nothing lost, order kept per device, fresh data before backlog ends."""
    rig = Rig(tmp_path, broker.port, backlog_share=0.25, live_window_s=0.5)
    async with rig.running():
        n = 0
        for _ in range(50):
            await rig.writer.submit([reading("a", n), reading("b", n)])
            n += 1
        await until(lambda: rig.sender.stats.readings_acked >= 100)
        recorder.stop()
        broker.stop()
        for _ in range(3000):  # backlog while the broker is away
            await rig.writer.submit([reading("a", n), reading("b", n)])
            n += 1
        await until(lambda: rig.outbox.waiting(Priority.TELEMETRY) >= 5000)
        await asyncio.sleep(0.6)  # older than the live window: backlog now
        broker.start()
        recorder.start()
        outage_end = n
        for _ in range(40):  # live data keeps flowing while the backlog drains
            await rig.writer.submit([reading("a", n), reading("b", n)])
            n += 1
            await asyncio.sleep(0.01)
        await until(lambda: rig.sender.stats.readings_acked >= 2 * n, 60)
    got = recorder.wait_for(2 * n)
    for dev in ("a", "b"):
        values = sorted(r["value"] for r in got if r["device"] == dev)
        assert set(values) == set(range(n)), "every reading arrives"
        # Order per device: within the arrival order, seq rises with the value.
        per = [(r["seq"], r["value"]) for r in got if r["device"] == dev]
        assert sorted(per) == sorted(per, key=lambda sv: sv[1])
    # Fresh readings reached the subscriber before the last backlog reading did.
    order = [r["value"] for r in got if r["device"] == "a"]
    first_live = min(i for i, v in enumerate(order) if v >= outage_end)
    last_backlog = max(i for i, v in enumerate(order) if v < outage_end)
    assert first_live < last_backlog
    assert rig.sender.stats.backlog_batches > 0 and rig.sender.stats.live_batches > 0


async def test_two_gateways_with_one_client_id_are_named(tmp_path: Path, broker: Broker) -> None:
    """Two senders with one client id close each other's connection: the log says why."""
    from structlog.testing import capture_logs

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Rig(tmp_path / "a", broker.port), Rig(tmp_path / "b", broker.port)
    with capture_logs() as logs:
        async with a.running(), b.running():
            deadline = time.monotonic() + 20
            while not any(e["event"] == "uplink_session_taken_over" for e in logs):
                assert time.monotonic() < deadline, "no hint after 20 s of ping-pong"
                await asyncio.sleep(0.1)
    hint = next(e for e in logs if e["event"] == "uplink_session_taken_over")
    assert hint["client_id"] == "gw1" and "gateway_id" in hint["hint"]
    # What `cityedge status` shows as the uplink's last error says it too.
    errors = [rig.sender.stats.last_error or "" for rig in (a, b)]
    assert any("another client with client id 'gw1'" in e for e in errors), errors
    for rig in (a, b):
        rig.executor.shutdown(wait=True)
