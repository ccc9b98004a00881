"""Serial sensors: pure frame codecs and stream framers (PMS5003, SDS011, NMEA, generic).

Each ``decode_*`` entry takes what a technician pastes into ``cityedge
decode`` and returns a JSON-ready dict, raising
:class:`~cityedge.drivers.base.DecodeError` on input that does not decode.
Layout: :mod:`.pms5003`, :mod:`.sds011`, :mod:`.nmea` and :mod:`.generic`
are the codecs, :mod:`.framing` cuts byte streams into frames,
:mod:`.codecs` adapts each codec to the driver (framer, decoder, commands;
:func:`~cityedge.drivers.serial.codecs.make_codec`), and the source that
reads a sensor on a serial line is
:class:`~cityedge.drivers.serial.driver.SerialSensorSource` (pyserial,
:mod:`.transport`), built by :func:`~cityedge.drivers.serial.driver.build_source`.
"""

from cityedge.drivers.serial.codecs import LatestFix
from cityedge.drivers.serial.driver import SerialSensorSource, build_source
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
