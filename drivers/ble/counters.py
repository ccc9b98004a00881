"""Persistence of the BTHome replay counters: the last accepted counter per MAC.

:class:`CounterStore` keeps them in memory and writes every change through
to ``<state_dir>/ble.json`` (TinyDB) via :class:`_AtomicJSONStorage`, which
replaces the file atomically and fsyncs it, so a power cut never leaves a
half-written file. It never raises on I/O: a file it cannot read is set
aside (``ble.json.corrupt``) and logged, a write that fails is logged once
until one succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage


class _AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the file atomically and fsyncs it.

    TinyDB's JSONStorage rewrites the file in place: a power cut mid-write
    leaves it corrupt, and with it the replay protection.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        data = json.loads(text)  # ValueError on a corrupt file: the caller decides
        if not isinstance(data, dict):
            raise ValueError("top level is not an object")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class CounterStore:
    """Last accepted BTHome counter per MAC, in TinyDB; never raises on I/O.

    Memory is the truth while running; every change is written through. A
    file that is not what we wrote is set aside and rewritten from memory.
    """

    TABLE = "bthome_counters"

    def __init__(self, path: Path, log: Any) -> None:
        self.path = path
        self._log = log
        self._last: dict[str, int] = {}
        self._write_failing = False
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = TinyDB(str(path), storage=_AtomicJSONStorage)
        try:
            docs = self._db.table(self.TABLE).all()
        except OSError as exc:
            docs = []
            log.error("ble_state_unreadable", path=str(path), error=str(exc),
                      hint="BTHome replay counters are kept in memory only")  # fmt: skip
        except Exception as exc:  # not JSON, or not the layout TinyDB writes
            docs = []
            self._set_aside(exc)
        for doc in docs:
            mac, counter = doc.get("mac"), doc.get("counter")
            if isinstance(mac, str) and isinstance(counter, int) and not isinstance(counter, bool):
                self._last[mac] = counter

    def _set_aside(self, exc: Exception) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        with contextlib.suppress(OSError):
            os.replace(self.path, aside)
        self._log.error(
            "ble_state_corrupt", path=str(self.path), moved_to=str(aside), error=str(exc),
            hint="BTHome replay protection restarts from the next packet of each tag",
        )  # fmt: skip
        self._db.close()
        self._db = TinyDB(str(self.path), storage=_AtomicJSONStorage)

    def get(self, mac: str) -> int | None:
        return self._last.get(mac)

    def set(self, mac: str, counter: int) -> None:
        self._last[mac] = counter
        try:
            try:
                self._db.table(self.TABLE).upsert({"mac": mac, "counter": counter},
                                                  Query().mac == mac)  # fmt: skip
            except (ValueError, TypeError, AttributeError, KeyError) as exc:  # damaged meanwhile
                self._set_aside(exc)
                table = self._db.table(self.TABLE)
                table.insert_multiple({"mac": m, "counter": c} for m, c in self._last.items())
        except OSError as exc:  # disk full, read-only: log once until a write succeeds
            if not self._write_failing:
                self._log.error("ble_state_write_failed", path=str(self.path), error=str(exc))
            self._write_failing = True
            return
        if self._write_failing:
            self._write_failing = False
            self._log.info("ble_state_write_recovered", path=str(self.path))

    def close(self) -> None:
        self._db.close()
