"""LoRaWAN sessions and their persistence (TinyDB, one JSON file in the state dir).

A session is what the network server must remember about a device between
frames and across restarts: its DevAddr and session keys, the last accepted
32-bit uplink counter (so a replayed frame stays rejected after a restart),
the downlink counter, and for OTAA devices every DevNonce it has joined with
(so a replayed join request is refused).

The file is rewritten on every change, atomically (temporary file, fsync,
rename), so a crash leaves the old or the new version, never a torn one. It
holds session keys, so it is written with mode 0600 whatever the umask (and
a file an older version left wider is narrowed when it is read). A
file that still does not parse (a disk fault, a hand edit) is moved aside as
``<name>.corrupt-<time>``, logged and counted, and the store starts from the
configured sessions; a record that does not make sense is dropped and
counted the same way. Neither stops the driver.

The file is named after the bus (``lorawan-<bus>.json``). When a bus is
renamed, its devices' sessions stay in the old file and the bus starts
without them (an ABP counter starts again, reopening replay; OTAA devices
must join again). :meth:`SessionStore.check_other_files` finds other
``lorawan-*.json`` files holding sessions of this bus's devices, says which
and what to do, and counts each (``state_file_other_bus``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from tinydb import Query, TinyDB

from cityedge.drivers.lorawan import crypto
from cityedge.jsonstore import AtomicJSONStorage

MAX_DEV_NONCES = 4096  # DevNonces kept per device; the oldest go first
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


@dataclass(slots=True)
class Session:
    """One device's network state. Keys are bytes; counters None until a frame is accepted."""

    dev_eui: str
    dev_addr: int | None = None
    nwk_s_key: bytes | None = None
    app_s_key: bytes | None = None
    fcnt_up: int | None = None
    fcnt_down: int = 0
    dev_nonces: list[int] = field(default_factory=list)
    joined: bool = False  # the keys came from an OTAA join (not from the config)
    reset_seen: list[str] = field(default_factory=list)  # relaxed_fcnt: see .resets

    @property
    def active(self) -> bool:
        return self.dev_addr is not None and self.nwk_s_key is not None

    def to_doc(self) -> dict[str, Any]:
        return {
            "dev_eui": self.dev_eui,
            "dev_addr": None if self.dev_addr is None else f"{self.dev_addr:08X}",
            "nwk_s_key": None if self.nwk_s_key is None else self.nwk_s_key.hex(),
            "app_s_key": None if self.app_s_key is None else self.app_s_key.hex(),
            "fcnt_up": self.fcnt_up,
            "fcnt_down": self.fcnt_down,
            "dev_nonces": self.dev_nonces[-MAX_DEV_NONCES:],
            "joined": self.joined,
            "reset_seen": self.reset_seen,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Session:
        """Raises ValueError (or TypeError) on a record that does not make sense."""

        def key(name: str) -> bytes | None:
            value = doc.get(name)
            return None if value is None else crypto.check_key(bytes.fromhex(value), name)

        def counter(value: Any, top: int) -> int | None:
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ValueError(f"counter out of range: {value!r}")
            return value

        addr = doc.get("dev_addr")
        nonces = doc.get("dev_nonces", [])
        if not isinstance(nonces, list):
            raise ValueError("dev_nonces is not a list")
        seen = doc.get("reset_seen", [])
        if not isinstance(seen, list) or not all(
            isinstance(f, str) and _FINGERPRINT.fullmatch(f) for f in seen
        ):
            raise ValueError("reset_seen is not a list of 16 hex digit fingerprints")
        return cls(
            dev_eui=str(doc["dev_eui"]).lower(),
            dev_addr=None if addr is None else int(addr, 16) & 0xFFFFFFFF,
            nwk_s_key=key("nwk_s_key"),
            app_s_key=key("app_s_key"),
            fcnt_up=counter(doc.get("fcnt_up"), 0xFFFFFFFF),
            fcnt_down=counter(doc.get("fcnt_down", 0), 0xFFFFFFFF) or 0,
            dev_nonces=[int(counter(n, 0xFFFF) or 0) for n in nonces],
            joined=bool(doc.get("joined", False)),
            reset_seen=list(seen),
        )


class SessionStore:
    """Sessions by DevEUI, persisted in ``path`` (a TinyDB file)."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.rejected: dict[str, int] = {}
        self.writes = 0
        self.write_errors = 0
        self._log = structlog.get_logger().bind(driver="lorawan", state=str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = TinyDB(str(path), storage=AtomicJSONStorage, fsync=fsync)
        self._table = self._db.table("sessions")
        storage: AtomicJSONStorage = self._db.storage  # type: ignore[assignment]
        self._saved = self._load_all()
        for why in storage.corrupt:
            self._count("state_corrupt")
            self._log.error("state_file_corrupt", error=why)

    def _count(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _load_all(self) -> dict[str, Session]:
        """Valid records from the file; the table is rewritten if any was dropped."""
        raw = (self._db.storage.read() or {}).get("sessions", {})
        saved: dict[str, Session] = {}
        for doc_id, doc in raw.items():
            try:
                if not isinstance(doc, dict) or not str(doc_id).isdigit():
                    raise ValueError("record is not an object with a numeric id")
                session = Session.from_doc(doc)
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                self._count("state_record_invalid")
                self._log.warning("state_record_dropped", error=str(exc)[:80])
                continue
            saved[session.dev_eui] = session
        if len(saved) != len(raw):
            self._db.drop_table("sessions")
            self._table = self._db.table("sessions")
            self._table.insert_multiple(s.to_doc() for s in saved.values())
        return saved

    def load(self, dev_eui: str) -> Session | None:
        """The persisted session of a device, if there is one."""
        return self._saved.get(dev_eui.lower())

    def save(self, session: Session) -> bool:
        """Persist a session; False (logged, counted) if the disk refused."""
        self._saved[session.dev_eui] = session
        try:
            self._table.upsert(session.to_doc(), Query().dev_eui == session.dev_eui)
        except OSError as exc:
            self.write_errors += 1
            self._log.error("state_write_failed", error=str(exc))
            return False
        self.writes += 1
        return True

    def check_other_files(
        self, bus: str, dev_euis: Iterable[str], configured: Iterable[str] = ()
    ) -> list[Path]:
        """Other ``lorawan-*.json`` files holding sessions of these devices: warned and counted.

        Run once at start, before any write. Such a file is the state of a bus
        renamed to ``bus`` (or of another bus the devices moved from): its
        sessions are not used here. When that other bus is still in the
        config (``configured``), the devices moved between two live buses: its
        file also holds its own devices' sessions, so it is only noted (info),
        never to be renamed or deleted.
        """
        mine = {eui.lower() for eui in dev_euis}
        live = set(configured)
        found: list[Path] = []
        for other in sorted(self.path.parent.glob("lorawan-*.json")):
            held = sorted(mine & _dev_euis(other)) if other != self.path else []
            if not held:
                continue
            other_bus = other.name.removeprefix("lorawan-").removesuffix(".json")
            if other_bus in live:
                self._log.info("sessions_on_another_bus", file=str(other), bus=bus,
                               other_bus=other_bus, devices=held[:10], sessions=len(held),
                               hint=f"these devices moved from bus {other_bus}; their old "
                               "sessions there are not used. Keep the file: it holds "
                               f"{other_bus}'s own devices")  # fmt: skip
                continue
            found.append(other)
            self._count("state_file_other_bus")
            self._log.warning(
                "state_file_other_bus",
                file=str(other),
                bus=bus,
                devices=held[:10],
                sessions=len(held),
                hint=_other_file_hint(other, self.path, self._holds_any(held)),
            )
        return found

    def _holds_any(self, dev_euis: Iterable[str]) -> bool:
        return any(self.load(eui) is not None for eui in dev_euis)

    def close(self) -> None:
        self._db.close()


def _dev_euis(path: Path) -> set[str]:
    """The DevEUIs a state file holds sessions of; none if it does not read."""
    try:
        data = json.loads(path.read_bytes())
        docs = data["sessions"].values()
        return {str(d["dev_eui"]).lower() for d in docs if isinstance(d, dict) and "dev_eui" in d}
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return set()


def _other_file_hint(other: Path, own: Path, own_has_them: bool) -> str:
    lost = "this bus starts without those sessions (ABP counters restart, OTAA devices re-join)"
    if own_has_them:
        return f"{lost}; {own.name} already holds newer ones: delete {other.name}"
    return (
        f"{lost}: if the bus was renamed, stop the agent and rename {other.name} "
        f"to {own.name}; if that bus and its devices are gone, delete {other.name}"
    )
