"""The driver contract: every driver passes the same steps against a real peer.

start -> readings flow; a device fault becomes a bad reading or a counted
rejection and the source keeps running; the transport is lost and comes back
by itself; cancelling the source leaves no task or thread behind.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.contract.base import ContractPeer, started
from tests.contract.modbus import ModbusRtuPeer, ModbusTcpPeer
from tests.peers.modbus import Collector, async_test, running

PEERS: list[type[ContractPeer]] = [ModbusTcpPeer, ModbusRtuPeer]


async def until(sink: Collector, check, within_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    await sink.wait_for(check, within_s)


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
                await until(sink, lambda: peer.good(sink) >= 3)
                # 2. device fault: a bad reading or a counted rejection; still running
                await peer.device_fault()
                await peer.stimulate()
                await until(sink, lambda: peer.fault_seen(sink, source))
                assert not task.done()
                # 3. transport loss and recovery, by itself
                await peer.cut()
                await asyncio.sleep(0.5)
                before = peer.good(sink)
                await peer.restore()
                await peer.stimulate()
                await until(sink, lambda: peer.good(sink) >= before + 3, 20.0)
                assert not task.done()
            # 4. clean shutdown: `running` cancelled it; async_test checks for leftovers
            assert task.cancelled() or task.done()
            status = source.status()
            assert isinstance(status, dict)

    contract()
