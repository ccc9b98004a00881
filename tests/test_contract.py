"""The driver contract: every driver passes the same steps against a real peer.

start -> readings flow; a device fault becomes a bad reading or a counted
rejection and the source keeps running; the transport is lost and comes back
by itself; cancelling the source leaves no task or thread behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from cityedge.grid import cell_id
from tests.contract.base import SITE, ContractPeer, started
from tests.contract.ble import BleContractPeer
from tests.contract.chirpstack import ChirpStackContractPeer
from tests.contract.lorawan import LoRaWANContractPeer
from tests.contract.modbus import ModbusRtuPeer, ModbusTcpPeer
from tests.contract.opcua import OpcUaContractPeer
from tests.contract.serial import SerialContractPeer
from tests.peers.modbus import Collector, async_test, running

PEERS: list[type[ContractPeer]] = [
    ModbusTcpPeer,
    ModbusRtuPeer,
    OpcUaContractPeer,
    SerialContractPeer,
    LoRaWANContractPeer,
    ChirpStackContractPeer,
    BleContractPeer,
]


async def until(
    peer: ContractPeer,
    sink: Collector,
    check: Callable[[], bool],
    within_s: float = 10.0,
    *,
    stimulate: bool = True,
) -> None:
    """Wait until ``check()`` holds, re-checked on every batch and every 20 ms.

    A push peer is stimulated again every ``peer.restimulate_s`` meanwhile
    (unless ``stimulate`` is false: the transport is cut); a check on
    ``source.status()`` (a counted rejection) needs no batch to hold.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    again = loop.time() + (peer.restimulate_s or math.inf)
    while not check():
        now = loop.time()
        assert now < deadline, f"{peer.name}: not reached within {within_s} s"
        if stimulate and peer.restimulate_s is not None and now >= again:
            await peer.stimulate()
            again = now + peer.restimulate_s
        sink.event.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.02):
                await sink.event.wait()


def check_readings(peer: ContractPeer, sink: Collector) -> None:
    """Every reading: the device, a point, a UTC time, the site's cell, the clock's word."""
    cell = cell_id(SITE.latitude, SITE.longitude, SITE.cell_size_m)
    for r in sink.readings:
        assert r.device == peer.device and r.point, r
        assert r.ts.utcoffset() == timedelta(0), r
        assert (r.cell, r.time_ok) == (cell, peer.clock_synced), r
        assert r.quality == "good" or r.reason, r


def check_status(peer: ContractPeer, status: dict[str, object]) -> None:
    """After shutdown: status() JSON-ready, not connected, per device its state and errors."""
    json.dumps(status)  # as `cityedge status` shows it
    assert {"bus", "type", "connected", "devices"} <= status.keys(), status
    assert status["connected"] is False, "a cancelled source still claims its transport"
    devices = status["devices"]
    assert isinstance(devices, dict) and peer.device in devices, status
    device = devices[peer.device]
    assert {"state", "last_error", "errors_total"} <= device.keys(), device
    assert "polls" in device or "frames" in device, device


@pytest.mark.parametrize("peer_cls", PEERS, ids=lambda c: c.name)
def test_driver_contract(peer_cls: type[ContractPeer], tmp_path: Path) -> None:
    """Start, read, device fault, transport loss and recovery, clean shutdown."""

    @async_test
    async def contract() -> None:
        peer = peer_cls(tmp_path)
        async with started(peer):
            source = peer.source()
            sink = Collector()
            async with running(source, sink) as task:
                # 1. start, read or stream
                await peer.stimulate()
                await until(peer, sink, lambda: peer.good(sink) >= 3)
                # 2. device fault: a bad reading or a counted rejection; still running
                await peer.device_fault()
                await peer.stimulate()
                await until(peer, sink, lambda: peer.fault_seen(sink, source))
                assert not task.done()
                # 3. transport loss and recovery, by itself
                await peer.cut()
                await until(peer, sink, lambda: peer.loss_seen(sink, source), stimulate=False)
                await asyncio.sleep(0.5)
                before = peer.good(sink)
                await peer.restore()
                await peer.stimulate()
                await until(peer, sink, lambda: peer.good(sink) >= before + 3, 20.0)
                assert not task.done()
            # 4. clean shutdown: `running` cancelled it; async_test checks for leftovers
            assert task.cancelled() or task.done()
            check_readings(peer, sink)
            check_status(peer, source.status())

    contract()
