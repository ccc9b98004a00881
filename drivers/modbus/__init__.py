"""Modbus TCP and RTU: pure codec and read planner, pymodbus transport, bus scheduler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.modbus.client import ModbusClient, ModbusDevice, ReplyMismatch
from cityedge.drivers.modbus.codec import EncodeError, decode_point, encode_point, encode_value
from cityedge.drivers.modbus.plan import ReadRequest, plan_reads
from cityedge.drivers.modbus.scheduler import ModbusBus

if TYPE_CHECKING:
    from cityedge.sources import SourceContext

__all__ = [
    "EncodeError",
    "ModbusBus",
    "ModbusClient",
    "ModbusDevice",
    "ReadRequest",
    "ReplyMismatch",
    "build_source",
    "decode_point",
    "encode_point",
    "encode_value",
    "plan_reads",
]


def build_source(bus: BusConfig, devices: Sequence[DeviceConfig], ctx: SourceContext) -> ModbusBus:
    """The bus scheduler for one Modbus TCP or RTU bus (see cityedge.sources)."""
    return ModbusBus(bus, [(d, ctx.cell_for(d)) for d in devices], clock_ok=ctx.clock_ok)
