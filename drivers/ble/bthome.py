"""BTHome v2 service data (UUID 0xFCD2), plain and AES-CCM encrypted. Pure.

Service data as bleak reports it (the UUID already removed)::

    info | [MAC, 6 bytes reversed, if info bit 1] | objects
    info | [MAC ...] | ciphertext | counter (4, LE) | MIC (4)     (info bit 0)

``info`` bits: 0 encrypted, 1 MAC included, 2 trigger based (sends only on
events), 5-7 version (must be 2). Objects are an id byte and a little-endian
value whose size, sign and factor the id fixes (:data:`OBJECTS`, after
bthome.io/format); text (0x53) and raw (0x54) carry a length byte. Parsing
stops at the first unknown id, as the spec asks, so a newer device still
yields the objects we know. Several objects with the same name are numbered
``temperature_1``, ``temperature_2``... in packet order.

Encryption (bthome.io/encryption): AES-128-CCM with the device's 16-byte
bind key, a 4-byte MIC, no associated data, and the nonce
``MAC (6) | D2 FC | info | counter (4)``. A counter that does not increase
is a replay (:func:`is_replay`); the caller keeps the last counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from cityedge.drivers.base import DecodeError
from cityedge.readings import Value

SERVICE_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
UUID16 = b"\xd2\xfc"
INFO_ENCRYPTED = 0x01
INFO_MAC_INCLUDED = 0x02
INFO_TRIGGER = 0x04
VERSION = 2
MIC_SIZE = 4
COUNTER_SIZE = 4


@dataclass(frozen=True, slots=True)
class ObjectType:
    """One object id: name, value size, sign, ``value = raw * mult / 10**decimals``, unit.

    ``kind`` is ``number``, ``binary``, ``button``, ``dimmer``, ``text``, ``raw``,
    ``timestamp`` or ``firmware``.
    """

    name: str
    size: int
    signed: bool = False
    decimals: int = 0
    unit: str = ""
    kind: str = "number"
    mult: int = 1


def _n(name: str, size: int, decimals: int = 0, unit: str = "", signed: bool = False) -> ObjectType:
    return ObjectType(name, size, signed, decimals, unit)


def _s(name: str, size: int, decimals: int = 0, unit: str = "") -> ObjectType:
    return ObjectType(name, size, True, decimals, unit)


def _b(name: str) -> ObjectType:
    return ObjectType(name, 1, kind="binary")


# Binary sensors whose bthome.io name is also a numeric sensor's get a suffix
# (power_on, battery_low, moisture_detected, gas_detected): readings are keyed
# by name, and a flag must not be numbered as if it were the same quantity.
OBJECTS: dict[int, ObjectType] = {
    0x00: _n("packet_id", 1),
    0x01: _n("battery", 1, 0, "%"),
    0x02: _s("temperature", 2, 2, "Cel"),
    0x03: _n("humidity", 2, 2, "%"),
    0x04: _n("pressure", 3, 2, "hPa"),
    0x05: _n("illuminance", 3, 2, "lx"),
    0x06: _n("mass", 2, 2, "kg"),
    0x07: _n("mass", 2, 2, "lb"),
    0x08: _s("dewpoint", 2, 2, "Cel"),
    0x09: _n("count", 1),
    0x0A: _n("energy", 3, 3, "kWh"),
    0x0B: _n("power", 3, 2, "W"),
    0x0C: _n("voltage", 2, 3, "V"),
    0x0D: _n("pm2_5", 2, 0, "ug/m3"),
    0x0E: _n("pm10", 2, 0, "ug/m3"),
    0x0F: _b("generic_boolean"),
    0x10: _b("power_on"),
    0x11: _b("opening"),
    0x12: _n("co2", 2, 0, "ppm"),
    0x13: _n("tvoc", 2, 0, "ug/m3"),
    0x14: _n("moisture", 2, 2, "%"),
    0x15: _b("battery_low"),
    0x16: _b("battery_charging"),
    0x17: _b("carbon_monoxide"),
    0x18: _b("cold"),
    0x19: _b("connectivity"),
    0x1A: _b("door"),
    0x1B: _b("garage_door"),
    0x1C: _b("gas_detected"),
    0x1D: _b("heat"),
    0x1E: _b("light"),
    0x1F: _b("lock"),
    0x20: _b("moisture_detected"),
    0x21: _b("motion"),
    0x22: _b("moving"),
    0x23: _b("occupancy"),
    0x24: _b("plug"),
    0x25: _b("presence"),
    0x26: _b("problem"),
    0x27: _b("running"),
    0x28: _b("safety"),
    0x29: _b("smoke"),
    0x2A: _b("sound"),
    0x2B: _b("tamper"),
    0x2C: _b("vibration"),
    0x2D: _b("window"),
    0x2E: _n("humidity", 1, 0, "%"),
    0x2F: _n("moisture", 1, 0, "%"),
    0x3A: ObjectType("button", 1, kind="button"),
    0x3C: ObjectType("dimmer", 2, kind="dimmer"),
    0x3D: _n("count", 2),
    0x3E: _n("count", 4),
    0x3F: _s("rotation", 2, 1, "deg"),
    0x40: _n("distance", 2, 0, "mm"),
    0x41: _n("distance", 2, 1, "m"),
    0x42: _n("duration", 3, 3, "s"),
    0x43: _n("current", 2, 3, "A"),
    0x44: _n("speed", 2, 2, "m/s"),
    0x45: _s("temperature", 2, 1, "Cel"),
    0x46: _n("uv_index", 1, 1),
    0x47: _n("volume", 2, 1, "L"),
    0x48: _n("volume", 2, 0, "mL"),
    0x49: _n("volume_flow_rate", 2, 3, "m3/h"),
    0x4A: _n("voltage", 2, 1, "V"),
    0x4B: _n("gas", 3, 3, "m3"),
    0x4C: _n("gas", 4, 3, "m3"),
    0x4D: _n("energy", 4, 3, "kWh"),
    0x4E: _n("volume", 4, 3, "L"),
    0x4F: _n("water", 4, 3, "L"),
    0x50: ObjectType("timestamp", 4, kind="timestamp"),
    0x51: _n("acceleration", 2, 3, "m/s2"),
    0x52: _n("gyroscope", 2, 3, "deg/s"),
    0x53: ObjectType("text", 0, kind="text"),
    0x54: ObjectType("raw", 0, kind="raw"),
    0x55: _n("volume_storage", 4, 3, "L"),
    0x56: _n("conductivity", 2, 0, "uS/cm"),
    0x57: _s("temperature", 1, 0, "Cel"),
    0x58: ObjectType("temperature", 1, True, 2, "Cel", mult=35),
    0x59: _s("count", 1),
    0x5A: _s("count", 2),
    0x5B: _s("count", 4),
    0x5C: _s("power", 4, 2, "W"),
    0x5D: _s("current", 2, 3, "A"),
    0x5E: _n("direction", 2, 2, "deg"),
    0x5F: _n("precipitation", 2, 1, "mm"),
    0x60: _n("channel", 1),
    0x61: _n("rotational_speed", 2, 0, "rpm"),
    0x62: _s("speed", 4, 6, "m/s"),
    0x63: _s("acceleration", 4, 6, "m/s2"),
    0x64: _n("light_level", 1),
    0xF0: _n("device_type_id", 2),
    0xF1: ObjectType("firmware_version", 4, kind="firmware"),
    0xF2: ObjectType("firmware_version", 3, kind="firmware"),
}

BUTTON_EVENTS = {
    0x00: None,
    0x01: "press",
    0x02: "double_press",
    0x03: "triple_press",
    0x04: "long_press",
    0x05: "long_double_press",
    0x06: "long_triple_press",
    0x80: "hold_press",
}
DIMMER_EVENTS = {0x00: None, 0x01: "rotate_left", 0x02: "rotate_right"}


@dataclass(frozen=True, slots=True)
class BthomeObject:
    """One decoded object. A dimmer event also fills ``steps``."""

    object_id: int
    name: str
    value: Value
    unit: str
    steps: int | None = None


@dataclass(frozen=True, slots=True)
class BthomePacket:
    """A decoded advertisement. ``counter`` is set for encrypted packets only."""

    encrypted: bool
    trigger_based: bool
    mac: str | None
    counter: int | None
    objects: tuple[BthomeObject, ...]

    def values(self) -> dict[str, Value]:
        """Objects by name; repeated names numbered from 1 in packet order."""
        return {key: obj.value for key, obj in self._keyed()}

    def units(self) -> dict[str, str]:
        return {key: obj.unit for key, obj in self._keyed() if obj.unit}

    def _keyed(self) -> list[tuple[str, BthomeObject]]:
        totals: dict[str, int] = {}
        for obj in self.objects:
            totals[obj.name] = totals.get(obj.name, 0) + 1
        seen: dict[str, int] = {}
        out: list[tuple[str, BthomeObject]] = []
        for obj in self.objects:
            seen[obj.name] = seen.get(obj.name, 0) + 1
            out.append((obj.name if totals[obj.name] == 1 else f"{obj.name}_{seen[obj.name]}", obj))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Flat values by name, plus ``encrypted``, ``trigger_based``, ``counter``, ``units``."""
        out: dict[str, Any] = {"encrypted": self.encrypted, "trigger_based": self.trigger_based}
        out["counter"] = self.counter
        if self.mac is not None:
            out["mac"] = self.mac
        for key, obj in self._keyed():
            out[key] = obj.value
            if obj.steps is not None:
                out[f"{key}_steps"] = obj.steps
        out["units"] = self.units()
        return out


def mac_bytes(mac: str) -> bytes:
    """``AA:BB:CC:DD:EE:FF`` (or with ``-`` or no separators) to 6 bytes."""
    digits = mac.replace(":", "").replace("-", "")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raw = b""
    if len(raw) != 6 or len(digits) != 12:
        raise DecodeError("bad_mac", repr(mac))
    return raw


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in raw)


def is_replay(counter: int, last: int | None) -> bool:
    """True if an encrypted packet's counter does not exceed the last one accepted.

    ``last`` is None for a device not heard from yet. A device whose counter
    restarts (new battery, reflash) is refused until its stored counter is
    cleared: accepting a reset would let anyone replay old packets.
    """
    return last is not None and counter <= last


def _nonce(mac: bytes, info: int, counter: bytes) -> bytes:
    return mac + UUID16 + bytes([info]) + counter


def _cipher(bind_key: bytes) -> AESCCM:
    if len(bind_key) != 16:
        raise DecodeError("bad_key", f"bind key must be 16 bytes, got {len(bind_key)}")
    return AESCCM(bind_key, tag_length=MIC_SIZE)


def encrypt(objects: bytes, mac: str, bind_key: bytes, counter: int, info: int = 0x41) -> bytes:
    """Service data for plain ``objects`` encrypted as a device would (tests, simulators)."""
    if not 0 <= counter <= 0xFFFFFFFF or not info & INFO_ENCRYPTED or info & INFO_MAC_INCLUDED:
        raise ValueError("counter must be u32; info must say encrypted, without MAC")
    ctr = counter.to_bytes(COUNTER_SIZE, "little")
    sealed = _cipher(bind_key).encrypt(_nonce(mac_bytes(mac), info, ctr), objects, None)
    return bytes([info]) + sealed[:-MIC_SIZE] + ctr + sealed[-MIC_SIZE:]


def _split_header(data: bytes) -> tuple[int, bytes | None, bytes]:
    """(info, MAC carried in the packet or None, rest); checks the version."""
    if not data:
        raise DecodeError("truncated", "empty service data")
    info = data[0]
    if info >> 5 != VERSION:
        raise DecodeError("bad_version", f"BTHome version {info >> 5}, expected {VERSION}")
    if info & INFO_MAC_INCLUDED:
        if len(data) < 7:
            raise DecodeError("truncated", "MAC flag set but no MAC")
        return info, data[6:0:-1], data[7:]
    return info, None, data[1:]


def decrypt(data: bytes, mac: str | None, bind_key: bytes) -> tuple[bytes, int]:
    """(plain objects, counter) of encrypted service data; ``bad_mic`` on a wrong key."""
    info, carried, body = _split_header(bytes(data))
    if not info & INFO_ENCRYPTED:
        raise DecodeError("not_encrypted", "info byte says plain")
    if len(body) < COUNTER_SIZE + MIC_SIZE:
        raise DecodeError("truncated", f"{len(body)} bytes after the header")
    if carried is not None:
        address = carried
    elif mac is not None:
        address = mac_bytes(mac)
    else:
        raise DecodeError("no_mac", "an encrypted packet needs the sender's MAC")
    ctr, mic = body[-8:-4], body[-4:]
    try:
        plain = _cipher(bind_key).decrypt(_nonce(address, info, ctr), body[:-8] + mic, None)
    except InvalidTag:
        raise DecodeError("bad_mic", "wrong bind key, MAC or corrupted packet") from None
    return plain, int.from_bytes(ctr, "little")


def _value(t: ObjectType, raw: bytes) -> tuple[Value, int | None]:
    if t.kind == "text":
        try:
            return raw.decode("utf-8"), None
        except UnicodeDecodeError:
            raise DecodeError("bad_object", "text object is not UTF-8") from None
    if t.kind == "raw":
        return raw.hex(), None
    if t.kind == "firmware":
        return ".".join(str(b) for b in reversed(raw)), None
    if t.kind == "button":
        return BUTTON_EVENTS.get(raw[0], f"unknown_{raw[0]}"), None
    if t.kind == "dimmer":
        return DIMMER_EVENTS.get(raw[0], f"unknown_{raw[0]}"), raw[1]
    number = int.from_bytes(raw, "little", signed=t.signed)
    if t.kind == "binary":
        return bool(number), None
    if t.kind == "timestamp":
        return datetime.fromtimestamp(number, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), None
    if t.decimals == 0:
        return number * t.mult, None
    return number * t.mult / 10**t.decimals, None


def parse_objects(payload: bytes) -> tuple[BthomeObject, ...]:
    """Decode plain objects; stop at the first unknown id. DecodeError if one is cut short."""
    out: list[BthomeObject] = []
    pos = 0
    while pos < len(payload):
        object_id = payload[pos]
        t = OBJECTS.get(object_id)
        if t is None:
            break
        pos += 1
        size = t.size
        if t.kind in ("text", "raw"):
            if pos >= len(payload):
                raise DecodeError("truncated", f"object 0x{object_id:02x} has no length")
            size = payload[pos]
            pos += 1
        raw = payload[pos : pos + size]
        if len(raw) < size:
            raise DecodeError("truncated", f"object 0x{object_id:02x} needs {size} bytes")
        pos += size
        value, steps = _value(t, raw)
        out.append(BthomeObject(object_id, t.name, value, t.unit, steps))
    return tuple(out)


def parse(data: bytes, mac: str | None = None, bind_key: bytes | None = None) -> BthomePacket:
    """Decode service data. With a bind key, plain packets are refused (``not_encrypted``):
    a device that has a key and suddenly sends in clear is being impersonated."""
    info, carried, body = _split_header(bytes(data))
    counter: int | None = None
    if info & INFO_ENCRYPTED:
        if bind_key is None:
            raise DecodeError("no_bind_key", "packet is encrypted")
        body, counter = decrypt(data, mac, bind_key)
    elif bind_key is not None:
        raise DecodeError("not_encrypted", "a bind key is configured but the packet is plain")
    return BthomePacket(
        encrypted=bool(info & INFO_ENCRYPTED),
        trigger_based=bool(info & INFO_TRIGGER),
        mac=format_mac(carried) if carried is not None else None,
        counter=counter,
        objects=parse_objects(body),
    )


def decode_bthome(data: bytes, mac: str | None, bind_key: bytes | None) -> dict[str, Any]:
    """BTHome v2 service data as a JSON-ready dict (see :meth:`BthomePacket.to_dict`)."""
    return parse(data, mac, bind_key).to_dict()
