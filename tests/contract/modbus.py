"""Contract peers for the Modbus driver: pymodbus servers over TCP and RTU on a pty."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from cityedge.config.model import BusConfig
from cityedge.drivers.base import Source
from cityedge.drivers.modbus import build_source
from cityedge.profiles import Point
from cityedge.sim.modbus_sim import ModbusSim
from tests.contract.base import ContractPeer, context
from tests.peers.modbus import Collector, device, free_port, make_profile
from tests.peers.pty import pty_link

PROFILE = make_profile(
    [
        Point("voltage", "input", 0, "float32", unit="V"),
        Point("temperature", "holding", 0, "int16", unit="Cel", scale=0.1),
    ]
)


class ModbusTcpPeer(ContractPeer):
    name = "modbus-tcp"

    def __init__(self, state_dir):  # type: ignore[no-untyped-def]
        super().__init__(state_dir)
        self.port = free_port()
        self.sim = ModbusSim({1: PROFILE}, port=self.port)

    async def peer(self) -> AsyncIterator[None]:
        await self.sim.start()
        try:
            yield
        finally:
            await self.sim.stop()

    def bus(self) -> BusConfig:
        return BusConfig(name="field", type="modbus-tcp", port=self.port, timeout_s=0.3)

    def source(self) -> Source:
        dev = device(self.device, 1, PROFILE, poll_interval_s=0.05, backoff_max_s=0.5)
        return build_source(self.bus(), [dev], context(self.state_dir))

    async def device_fault(self) -> None:
        self.sim.fail(1, "holding", 0, code=4)

    def fault_seen(self, sink: Collector, source: Source) -> bool:
        return any(
            r.reason == "modbus_exception" and r.code == 4 for r in sink.of(self.device, False)
        )

    async def cut(self) -> None:
        await self.sim.stop()

    async def restore(self) -> None:
        self.sim = ModbusSim({1: PROFILE}, port=self.port)
        await self.sim.start()


class ModbusRtuPeer(ModbusTcpPeer):
    name = "modbus-rtu"

    async def peer(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            self.link = await stack.enter_async_context(pty_link(None))
            self.sim = ModbusSim({1: PROFILE}, serial_port=self.link.a, baudrate=19200)
            await self.sim.start()
            stack.push_async_callback(self._stop)
            yield

    async def _stop(self) -> None:
        await self.sim.stop()

    def bus(self) -> BusConfig:
        return BusConfig(name="field", type="modbus-rtu", device=self.link.b,
                         baudrate=19200, timeout_s=0.3)  # fmt: skip

    async def cut(self) -> None:
        await self.sim.stop()  # the slave falls silent: every request times out

    async def restore(self) -> None:
        self.sim = ModbusSim({1: PROFILE}, serial_port=self.link.a, baudrate=19200)
        await self.sim.start()
