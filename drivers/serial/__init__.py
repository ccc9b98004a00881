"""Serial sensors: pure frame codecs and stream framers (PMS5003, SDS011, NMEA, generic).

Each ``decode_*`` entry takes what a technician pastes into ``cityedge
decode`` and returns a JSON-ready dict, raising
:class:`~cityedge.drivers.base.DecodeError` on input that does not decode.
The source that reads a sensor on a serial line is
:class:`~cityedge.drivers.serial.driver.SerialSensorSource` (pyserial,
:mod:`.transport`), built by :func:`~cityedge.drivers.serial.driver.build_source`.
"""

from cityedge.drivers.serial.driver import LatestFix, SerialSensorSource, build_source
from cityedge.drivers.serial.nmea import decode_nmea
from cityedge.drivers.serial.pms5003 import decode_pms5003
from cityedge.drivers.serial.sds011 import decode_sds011
from cityedge.drivers.serial.transport import LineSettings, SerialTransport

__all__ = [
    "LatestFix",
    "LineSettings",
    "SerialSensorSource",
    "SerialTransport",
    "build_source",
    "decode_nmea",
    "decode_pms5003",
    "decode_sds011",
]
