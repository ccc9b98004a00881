"""Contract peer for the OPC UA driver: a real asyncua server on a loopback port.

The source subscribes (publishing every 50 ms); the peer changes a variable
server-side as the PLC program would. Device fault: the variable's value
arrives with ``BadSensorFailure``. Transport loss: the server stopped (its
sockets closed) and started again on the same port with the same address
space, as a PLC reboot does; the source must open a new session and
subscribe again by itself.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

from asyncua.ua.status_codes import StatusCodes

from cityedge.drivers.base import Source
from cityedge.drivers.opcua import build_source
from cityedge.readings import Quality
from tests.contract.base import ContractPeer, context
from tests.peers.modbus import Collector, free_port
from tests.peers.opcua import PUMP_FIELDS, OpcUaPeer, opcua_bus, pump_device, pump_profile

# Speed, pressure (by browse path), running, counter: no node that starts out bad.
FIELDS = tuple(f for f in PUMP_FIELDS if f.name in {"speed", "pressure", "running", "counter"})


class OpcUaContractPeer(ContractPeer):
    name = "opcua"
    device = "pump1"
    clock_synced = False  # a gateway booted without NTP: readings say time_ok=False
    restimulate_s = 0.2

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.server = OpcUaPeer(free_port())
        self._speed = itertools.count(1)

    async def peer(self) -> AsyncIterator[None]:
        await self.server.start()
        try:
            yield
        finally:
            await self.server.stop()

    def source(self) -> Source:
        dev = pump_device(pump_profile(FIELDS), self.device)
        return build_source(
            opcua_bus(self.server.url), [dev], context(self.state_dir, synced=False)
        )

    async def stimulate(self) -> None:
        await self.server.set("Speed", float(next(self._speed)))

    async def device_fault(self) -> None:
        await self.server.set("Speed", 0.0, StatusCodes.BadSensorFailure)

    def fault_seen(self, sink: Collector, source: Source) -> bool:
        return any(
            r.point == "speed"
            and r.quality is Quality.BAD
            and (r.reason, r.code) == ("BadSensorFailure", StatusCodes.BadSensorFailure)
            for r in sink.of(self.device, False)
        )

    async def cut(self) -> None:
        await self.server.stop()

    def loss_seen(self, sink: Collector, source: Source) -> bool:
        return any(r.reason == "unreachable" for r in sink.of(self.device, False))

    async def restore(self) -> None:
        await self.server.start()
