"""BLE sensor tags: pure advertisement codecs (BTHome v2, Ruuvi RAWv2).

Each ``decode_*`` entry takes what a technician pastes into ``cityedge
decode`` and returns a JSON-ready dict, raising
:class:`~cityedge.drivers.base.DecodeError` on input that does not decode.
"""

from cityedge.drivers.ble.bthome import decode_bthome, is_replay
from cityedge.drivers.ble.ruuvi import decode_ruuvi

__all__ = ["decode_bthome", "decode_ruuvi", "is_replay"]
