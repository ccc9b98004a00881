"""Modbus TCP and RTU: pure codec and read planner, pymodbus transport, bus scheduler."""

from cityedge.drivers.modbus.client import ModbusClient, ModbusDevice, ReplyMismatch
from cityedge.drivers.modbus.codec import EncodeError, decode_point, encode_point, encode_value
from cityedge.drivers.modbus.plan import ReadRequest, plan_reads
from cityedge.drivers.modbus.scheduler import ModbusBus

__all__ = [
    "EncodeError",
    "ModbusBus",
    "ModbusClient",
    "ModbusDevice",
    "ReadRequest",
    "ReplyMismatch",
    "decode_point",
    "encode_point",
    "encode_value",
    "plan_reads",
]
