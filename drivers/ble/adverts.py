"""Pure BLE advert decoding: a tag's payload bytes to named values.

:func:`payload_of` picks the bytes a device's codec reads out of an advert
(BTHome service data 0xFCD2, Ruuvi manufacturer data 0x0499),
:func:`decode_advert` turns them into a :class:`Decoded` (values, units, the
packet id or sequence that makes an advert new, the encrypted BTHome
counter). No I/O, no clock, no state: the source in :mod:`.driver` does the
rest (a profile field's scale and offset: :meth:`FieldMap.engineering`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cityedge.drivers.ble import bthome, ruuvi
from cityedge.readings import Value

if TYPE_CHECKING:  # the scanner module imports bleak; decoding needs only the type
    from cityedge.drivers.ble.scanner import Advert


@dataclass(frozen=True, slots=True)
class Decoded:
    values: dict[str, Value]
    units: dict[str, str]
    key: int | None  # BTHome packet id or Ruuvi sequence: what makes an advert new
    counter: int | None  # encrypted BTHome only


def decode_advert(codec: str, raw: bytes, mac: str, bind_key: bytes | None) -> Decoded:
    """Pure: one device's payload to values. DecodeError on anything malformed."""
    if codec == "ruuvi":
        tag = ruuvi.parse(raw)
        units = tag.to_dict()["units"]
        x, y, z = tag.acceleration_g
        values: dict[str, Value] = {
            "temperature": tag.temperature,
            "humidity": tag.humidity,
            "pressure_pa": tag.pressure_pa,
            "acceleration_x": x,
            "acceleration_y": y,
            "acceleration_z": z,
            "battery_v": tag.battery_v,
            "tx_power_dbm": tag.tx_power_dbm,
            "movement_counter": tag.movement_counter,
        }
        units.update({f"acceleration_{a}": "g" for a in "xyz"})
        return Decoded(values, units, tag.sequence, None)
    packet = bthome.parse(raw, mac, bind_key)
    values = packet.values()
    packet_id = values.pop("packet_id", None)
    key = packet_id if isinstance(packet_id, int) and not isinstance(packet_id, bool) else None
    return Decoded(values, packet.units(), key, packet.counter)


def payload_of(codec: str, advert: Advert) -> bytes | None:
    """The bytes the device's codec reads, if the advert carries them."""
    if codec == "ruuvi":
        return advert.manufacturer_data.get(ruuvi.COMPANY_ID)
    return advert.service_data.get(bthome.SERVICE_UUID)
