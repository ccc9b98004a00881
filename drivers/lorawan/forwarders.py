"""The packet forwarders a ``lorawan-udp`` bus hears, and whether they went quiet.

A Semtech packet forwarder sends PULL_DATA every few seconds (its keepalive)
and a status PUSH_DATA every half minute, uplinks or not; a forwarder that
stopped (the concentrator service crashed, the SPI link died, the wrong
port in its config) just falls silent. UDP has no connection to lose, so the
bus notices by time: nothing heard from any forwarder for ``silence_s``.
"""

from __future__ import annotations

import time
from typing import Any

DEFAULT_SILENCE_S = 60.0
SILENT_HINT = (
    "no datagram from any packet forwarder: check that the forwarder runs "
    "(systemctl status lora-pkt-fwd or its equivalent) and that its "
    "server_address and serv_port_up point at this bus's bind and port"
)


class ForwarderWatch:
    """Per gateway: counters, last address and time heard; and silence as a whole."""

    def __init__(self, silence_s: float = DEFAULT_SILENCE_S) -> None:
        self.silence_s = silence_s
        self.gateways: dict[str, dict[str, Any]] = {}
        self.heard_at = time.monotonic()  # the clock starts with the listener
        self.silent = False

    def heard(self, gateway_eui: str) -> tuple[dict[str, Any], bool]:
        """Note a datagram from a gateway; returns its entry and whether silence ended."""
        gw = self.gateways.setdefault(gateway_eui, {"push": 0, "pull": 0, "addr": None})
        gw["seen"] = time.time()
        self.heard_at = time.monotonic()
        back, self.silent = self.silent, False
        return gw, back

    def went_silent(self) -> bool:
        """True once when nothing has been heard for ``silence_s`` (until heard again)."""
        if self.silent or time.monotonic() - self.heard_at < self.silence_s:
            return False
        self.silent = True
        return True

    def quiet_s(self) -> float:
        return time.monotonic() - self.heard_at

    def status(self) -> dict[str, Any]:
        return {
            "forwarders": "silent" if self.silent else ("ok" if self.gateways else "waiting"),
            "gateways": {
                eui: {k: v for k, v in g.items() if k != "addr"} for eui, g in self.gateways.items()
            },
        }
