"""TinyDB storage for the agent's small state files: atomic rewrites, owner only.

TinyDB's own JSONStorage rewrites its file in place through one shared file
handle: a power cut mid-write leaves it corrupt, and two threads (a read
moving the handle's position while a write truncates at it) can leave a
corrupt file behind while running. This storage keeps the data in memory,
writes a temporary file (mode 0600: session keys and alert records are for
the agent alone), fsyncs it and renames it into place; a file that does not
parse is set aside as ``<name>.corrupt-<ns>`` (the newest three are kept)
and the caller is told why in ``corrupt``. Used by the LoRaWAN sessions
(``lorawan-<bus>.json``) and the alert store (``alerts.json``). Callers
that share one from several threads hold their own lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

FILE_MODE = 0o600  # owner only, whatever the umask
KEEP_CORRUPT = 3  # set-aside copies kept per file, newest first


class AtomicJSONStorage(Storage):
    """TinyDB storage: whole-file atomic rewrites, an in-memory copy, corrupt files set aside."""

    def __init__(self, path: str, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.corrupt: list[str] = []  # why the file was set aside, for the caller to count
        self._data: dict[str, dict[str, Any]] | None = None
        self._loaded = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        if not self._loaded:
            self._data = self._load()
            self._loaded = True
        return self._data

    def _load(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):  # a file an older version wrote 0644
            os.chmod(self.path, FILE_MODE)
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                raise ValueError("top level is not an object of tables")
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns()}")
            with contextlib.suppress(OSError):
                self.path.replace(aside)
            self._prune_corrupt()
            self.corrupt.append(f"{type(exc).__name__}: {str(exc)[:80]}; moved to {aside.name}")
            return None
        return data

    def _prune_corrupt(self) -> None:
        copies = sorted(self.path.parent.glob(f"{self.path.name}.corrupt-*"))
        for old in copies[:-KEEP_CORRUPT]:
            with contextlib.suppress(OSError):
                old.unlink()

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self._data = data
        self._loaded = True
        tmp = self.path.with_name(self.path.name + ".tmp")
        # Created 0600 and narrowed again in case an older .tmp was left wider:
        # the keys are never readable by others, not even between write and rename.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with open(fd, "wb") as f:
            os.fchmod(fd, FILE_MODE)
            f.write(json.dumps(data, separators=(",", ":")).encode())
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def close(self) -> None:
        pass
