"""Device profiles: what a device model exposes, as data.

A profile is a TOML file in ``firmware-profiles/<vendor>/<model>.toml``; see
``docs/profiles.md`` for the format. This module holds the validated model;
:mod:`cityedge.config.profile_loader` reads and validates the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from cityedge.alerts import AlertRule

if TYPE_CHECKING:
    from cityedge.readings import Value

RegisterType = Literal["coil", "discrete_input", "holding", "input"]
DataType = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "float32",
    "int64",
    "uint64",
    "float64",
    "string",
    "bitfield",
]

PROTOCOLS = ("modbus", "opcua", "serial", "lorawan", "ble")

REGISTER_TYPES: tuple[RegisterType, ...] = ("coil", "discrete_input", "holding", "input")
BIT_REGISTERS = frozenset({"coil", "discrete_input"})

# Registers (16-bit words) each data type occupies; string has its own length.
WORDS: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "bitfield": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}

# Byte orders, named by the order of the value's bytes on the wire (A is the
# most significant byte of the value). Telegraf's convention.
ORDERS: dict[int, tuple[str, ...]] = {
    2: ("AB", "BA"),
    4: ("ABCD", "CDAB", "BADC", "DCBA"),
    8: ("ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA"),
}


def scale_value(raw: int | float, scale: float, offset: float) -> int | float:
    """``raw * scale + offset`` as a profile states it; ``raw`` itself when that is identity.

    Rounded to 12 significant digits: 2301 * 0.1 is 230.10000000000002 in
    binary, and no sensor or register holds more digits than that.
    """
    if scale == 1.0 and offset == 0.0:
        return raw
    return float(f"{raw * scale + offset:.12g}")


@dataclass(frozen=True, slots=True)
class WriteRange:
    """A point may be written, within [min, max] (engineering units)."""

    min: float
    max: float


@dataclass(frozen=True, slots=True)
class Point:
    """One value a device exposes.

    ``address`` is the 0-based protocol address (a register documented as
    30001 or 40001 is address 0). ``order`` is one of :data:`ORDERS` for the
    type's width. The engineering value is ``raw * scale + offset``.
    For ``bitfield``, ``bits`` is (lowest bit, highest bit) inclusive.
    For ``string``, ``length`` is the number of registers.
    """

    name: str
    register: RegisterType
    address: int
    type: DataType
    unit: str = ""
    family: str = "energy"
    order: str = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    length: int = 1
    bits: tuple[int, int] | None = None
    write: WriteRange | None = None
    description: str = ""
    model: str | None = None  # anomaly model watching this point
    alert: AlertRule | None = None  # threshold rule: blue / yellow / red

    @property
    def words(self) -> int:
        """How many registers (or bits, for coils) the point spans."""
        if self.register in BIT_REGISTERS:
            return 1
        if self.type == "string":
            return self.length
        return WORDS[self.type]

    @property
    def end(self) -> int:
        """One past the last address the point spans."""
        return self.address + self.words


@dataclass(frozen=True, slots=True)
class FieldMap:
    """For the non-Modbus protocols: one value the device yields, named as a point.

    ``key`` is what the codec calls the value (``pm2_5_atm`` for a PMS5003,
    ``temperature`` for BTHome, ``3.temperature`` for Cayenne channel 3) or,
    for OPC UA, the node id (``ns=2;s=Pump1.Speed``) or browse path
    (``0:Objects/2:Pump1/2:Speed``). The engineering value is
    ``raw * scale + offset``. ``options`` holds the protocol's own per-field
    settings (OPC UA sampling interval and deadband, for example).
    """

    key: str
    name: str
    unit: str = ""
    family: str = "energy"
    scale: float = 1.0
    offset: float = 0.0
    write: WriteRange | None = None
    description: str = ""
    model: str | None = None
    alert: AlertRule | None = None
    options: dict[str, object] = field(default_factory=dict)

    def engineering(self, raw: Value) -> Value:
        """:func:`scale_value` for a number; a boolean, text or None as it is."""
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return raw
        return scale_value(raw, self.scale, self.offset)


@dataclass(frozen=True, slots=True)
class AddressRange:
    """Addresses [start, end] (inclusive) of one register type never to be read."""

    register: RegisterType
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Profile:
    """A device model's points and the limits of its Modbus implementation."""

    name: str  # "<vendor>/<model>", the path under firmware-profiles without .toml
    vendor: str
    model: str
    family: str
    points: tuple[Point, ...] = ()  # Modbus
    protocol: str = "modbus"
    codec: str = ""  # the payload codec of a serial, LoRaWAN or BLE device
    codec_options: dict[str, object] = field(default_factory=dict)  # [codec] table
    fields: tuple[FieldMap, ...] = ()  # the other protocols
    source: str = ""  # where the register map was published
    firmware: tuple[str, ...] = ()  # pinned firmware versions; empty: any
    max_registers: int = 125  # per read request; some devices accept fewer
    max_bits: int = 2000
    max_gap: int = 8  # hole (in registers) bridged when coalescing reads
    unreadable: tuple[AddressRange, ...] = ()
    sha256: str = ""  # of the file, for attestation
    extra: dict[str, object] = field(default_factory=dict)

    def all_points(self) -> tuple[Point | FieldMap, ...]:
        """Every value the device exposes: its Modbus points, then the other protocols' fields."""
        return (*self.points, *self.fields)

    def point_names(self) -> list[str]:
        return [item.name for item in self.all_points()]

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)

    def field_by_key(self) -> dict[str, FieldMap]:
        return {f.key: f for f in self.fields}
