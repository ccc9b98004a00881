"""A LoRaWAN device of a ``lorawan-udp`` bus: its session, keys and counters.

:func:`make_device` restores a device's session at start: an OTAA device keeps
a joined session (or its used DevNonces while it waits to join); an ABP
device keeps its frame counters (and the frames :mod:`.resets` remembers)
only if its keys and DevAddr are unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cityedge.config.model import DeviceConfig
from cityedge.drivers.lorawan import phy, semtech
from cityedge.drivers.lorawan.sessions import Session
from cityedge.profiles import FieldMap


@dataclass(eq=False)
class Device:
    config: DeviceConfig
    session: Session
    cell: str
    fields: dict[str, FieldMap]
    log: Any
    app_key: bytes | None = None
    join_eui: str | None = None
    relaxed: bool = False
    down: bool = False  # reported unreachable (forwarders silent) since its last uplink
    stats: dict[str, Any] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def error(self, reason: str, detail: str = "") -> None:
        self.count("errors_total")
        errors = self.stats.setdefault("errors", {})
        errors[reason] = errors.get(reason, 0) + 1
        self.stats["last_error"] = f"{reason}: {detail}" if detail else reason


@dataclass(eq=False)
class Pending:
    """An accepted uplink or join whose copies from other gateways are being gathered."""

    device: Device
    frame: phy.DataFrame | phy.JoinRequest
    phy: bytes
    fcnt32: int
    received: datetime
    copies: list[tuple[str, semtech.RxPacket]]
    handle: asyncio.TimerHandle | None = None

    def best(self) -> tuple[str, semtech.RxPacket]:
        return max(self.copies, key=lambda c: (c[1].rssi, c[1].lsnr or -99.0))


def make_device(config: DeviceConfig, cell: str, saved: Session | None, log: Any) -> Device:
    """The device of ``config``, its session restored from ``saved`` where still valid."""
    o = config.options
    dev_eui = str(o["dev_eui"]).lower()
    otaa = o.get("activation", "abp") == "otaa"
    if otaa:
        session = saved if saved is not None and saved.joined else Session(dev_eui)
        if saved is not None and not saved.joined:
            session.dev_nonces = saved.dev_nonces
    else:
        session = Session(
            dev_eui,
            dev_addr=int(o["dev_addr"], 16),
            nwk_s_key=bytes.fromhex(o["nwk_s_key"]),
            app_s_key=bytes.fromhex(o["app_s_key"]),
        )
        same = saved is not None and (saved.dev_addr, saved.nwk_s_key, saved.app_s_key) == (
            session.dev_addr,
            session.nwk_s_key,
            session.app_s_key,
        )
        if saved is not None and same:
            session.fcnt_up, session.fcnt_down = saved.fcnt_up, saved.fcnt_down
            session.reset_seen = saved.reset_seen
        elif saved is not None:
            log.info("session_reprovisioned", dev_addr=f"{session.dev_addr:08X}")
    return Device(
        config=config,
        session=session,
        cell=cell,
        fields=config.profile.field_by_key(),
        log=log,
        app_key=bytes.fromhex(o["app_key"]) if otaa and o.get("app_key") else None,
        join_eui=str(o["join_eui"]).upper() if o.get("join_eui") else None,
        relaxed=bool(o.get("relaxed_fcnt", False)),
    )
