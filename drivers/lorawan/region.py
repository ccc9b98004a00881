"""The one LoRaWAN region this network server speaks: EU868 (LoRaWAN Regional Parameters RP002).

The driver answers in RX1: on the uplink's own frequency and data rate
(EU868's RX1 rule with RX1DROffset 0), JOIN_ACCEPT_DELAY1 (5 s) after a join
request, RECEIVE_DELAY1 after a data uplink. Those rules are EU868's alone:
in US915 or AS923 the same answer would go out on a channel the region
forbids for downlinks, or at an illegal power. So a frame heard outside the
EU868 band (863-870 MHz; a packet forwarder with a US915 concentrator or
``global_conf.json``) is refused (``wrong_region``) and never answered.
"""

from __future__ import annotations

NAME = "EU868"
BAND_MHZ = (863.0, 870.0)
JOIN_ACCEPT_DELAY1_US = 5_000_000


def in_band(freq_mhz: float) -> bool:
    """True if an uplink on ``freq_mhz`` lies in the EU868 band."""
    return BAND_MHZ[0] <= freq_mhz <= BAND_MHZ[1]


def out_of_band(freq_mhz: float) -> str:
    """What is wrong with an uplink frequency outside the band, and what is allowed."""
    low, high = BAND_MHZ
    return (
        f"uplink on {freq_mhz:g} MHz: this gateway serves {NAME} only ({low:g}-{high:g} MHz); "
        "check the packet forwarder's region and channel plan"
    )
