"""BLE sensor tags: pure advertisement codecs (BTHome v2, Ruuvi RAWv2) and their source.

Each ``decode_*`` entry takes what a technician pastes into ``cityedge
decode`` and returns a JSON-ready dict, raising
:class:`~cityedge.drivers.base.DecodeError` on input that does not decode.
Layout: :mod:`.bthome` and :mod:`.ruuvi` are the codecs, :mod:`.adverts`
picks a device's payload out of an advert and decodes it (pure),
:mod:`.counters` persists the BTHome replay counters, :mod:`.scanner` is
the bleak transport, and :class:`~cityedge.drivers.ble.driver.BleSource`
(built by :func:`~cityedge.drivers.ble.driver.build_source`) is the source.
"""

from cityedge.drivers.ble.bthome import decode_bthome, is_replay
from cityedge.drivers.ble.ruuvi import decode_ruuvi

__all__ = ["decode_bthome", "decode_ruuvi", "is_replay"]
