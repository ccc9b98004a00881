"""The durable outbox: SQLite in WAL mode between the drivers and the uplink.

Guarantees (see docs/outbox.md):

* A reading is *accepted* once its transaction has committed. With
  ``durability = "full"`` (the shipped setting) that commit is fsynced, so
  it survives kill -9 and power loss.
* The uplink *cuts* batches: in one transaction the readings move into a
  ``batches`` row holding the exact payload to publish. A cut batch is deleted
  only after the broker acknowledged it; after a restart the same payload,
  with the same batch id, is published again. Duplicates at the hub are
  therefore whole batches, bounded by the in-flight window, identified by id.
* A byte bound: when the readings waiting exceed ``max_bytes`` (or the disk's
  free space drops under ``min_free_bytes``) the oldest routine telemetry is
  dropped first, then events, alerts last. Every drop is counted, logged and
  recorded, and the next batch declares it, so the hub sees a gap, not a hole.
* A corrupt or torn file is moved aside, what can be read is salvaged into a
  fresh file, and the agent goes on: never a crash loop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from cityedge.readings import Priority

T = TypeVar("T")
log = structlog.get_logger("cityedge.outbox")

ROW_OVERHEAD = 40  # bytes of SQLite record and index per row, roughly
_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prio INTEGER NOT NULL,
    device TEXT NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS readings_prio_seq ON readings(prio, seq);
CREATE TABLE IF NOT EXISTS batches(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    prio INTEGER NOT NULL,
    count INTEGER NOT NULL,
    created REAL NOT NULL,
    payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS drops(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prio INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Row:
    """A reading as stored: its outbox sequence number and JSON body."""

    seq: int
    prio: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Drop:
    """A declared gap: readings the byte bound made the outbox drop."""

    prio: int
    first_seq: int
    last_seq: int
    count: int


@dataclass(frozen=True, slots=True)
class Batch:
    """A cut batch: published as is, deleted when the broker acknowledged it."""

    seq: int
    id: str
    prio: int
    count: int
    payload: bytes


# encode(batch_id, batch_seq, prio, rows, drops) -> payload bytes
Encoder = Callable[[str, int, int, Sequence[Row], Sequence[Drop]], bytes]
# seal(payload, stored chain state or None) -> (sealed payload, chain state to store).
# Runs inside the cut's transaction: if it raises, the cut is rolled back.
Sealer = Callable[[bytes, str | None], tuple[bytes, str]]
CHAIN_KEY = "signing.chain"


class StorageFull(Exception):
    """The disk is full: the readings were refused (and counted), not accepted."""


class Outbox:
    """Thread-safe; every method runs a short transaction under one lock.

    Call from a worker thread (see :class:`cityedge.pipeline.Writer`): SQLite
    commits fsync and must not block the event loop.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        durability: str = "full",
        min_free_bytes: int = 32 * 1024 * 1024,
        max_page_count: int | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.durability = durability
        self.min_free_bytes = min_free_bytes
        self._max_page_count = max_page_count  # tests simulate a full disk
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.epoch = ""
        self.bytes_by_prio = [0, 0, 0]
        self.count_by_prio = [0, 0, 0]
        self.counters: dict[str, int] = {}
        # (first seq of a commit, monotonic time of the commit): decides what
        # is live and what is backlog without a column or a scan.
        self._commits: deque[tuple[int, float]] = deque(maxlen=4096)

    # -- lifecycle -------------------------------------------------------

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open_db()
        except sqlite3.DatabaseError as exc:
            self._recover(exc)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.durability == "full" else "NORMAL"
        db.execute(f"PRAGMA synchronous={sync}")
        if self._max_page_count is not None:
            db.execute(f"PRAGMA max_page_count={int(self._max_page_count)}")
        return db

    def _open_db(self) -> None:
        db = self._connect(self.path)
        try:
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            if row is None:
                self.epoch = secrets.token_hex(4)
                db.execute("INSERT INTO meta VALUES('epoch', ?)", (self.epoch,))
            else:
                self.epoch = str(row[0])
            self.counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
            self.bytes_by_prio = [0, 0, 0]
            self.count_by_prio = [0, 0, 0]
            totals = "SELECT prio, count(*), coalesce(sum(size), 0) FROM readings GROUP BY prio"
            for prio, count, size in db.execute(totals):
                self.count_by_prio[int(prio)] = int(count)
                self.bytes_by_prio[int(prio)] = int(size)
        except BaseException:
            db.close()
            raise
        self._db = db

    # -- recovery ----------------------------------------------------------

    def _recover(self, exc: BaseException) -> None:
        """Move a corrupt file aside, salvage what reads, start afresh."""
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{secrets.token_hex(2)}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        rows, batches = _salvage(aside)
        log.error(
            "outbox_corrupt_recovered",
            error=str(exc),
            moved_to=str(aside),
            salvaged_readings=len(rows),
            salvaged_batches=len(batches),
        )
        self._open_db()
        db = self._require()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO readings(prio, device, size, body) VALUES(?,?,?,?)",
            [(p, d, len(b) + ROW_OVERHEAD, b) for p, d, b in rows],
        )
        db.executemany(
            "INSERT INTO batches(id, prio, count, created, payload) VALUES(?,?,?,?,?)",
            batches,
        )
        self._bump(db, "corrupt_recoveries", 1)
        self._bump(db, "salvaged_readings", len(rows))
        db.execute("COMMIT")
        for prio, _dev, body in rows:
            self.count_by_prio[prio] += 1
            self.bytes_by_prio[prio] += len(body) + ROW_OVERHEAD
        _prune_quarantine(self.path)

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    def _guard(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn in a transaction; on corruption recover and run it once more."""
        with self._lock:
            db = self._require()
            try:
                return _in_tx(db, fn)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and not _is_corruption(exc):
                    raise
                self._recover(exc)
                return _in_tx(self._require(), fn)

    # -- counters ------------------------------------------------------------

    def _bump(self, db: sqlite3.Connection, name: str, by: int) -> None:
        db.execute(
            "INSERT INTO counters VALUES(?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )
        self.counters[name] = self.counters.get(name, 0) + by

    # -- writer side ---------------------------------------------------------

    def accept(self, items: Sequence[tuple[int, str, bytes]]) -> int:
        """Commit (priority, device, body) rows. Returns how many were accepted.

        Raises :class:`StorageFull` when the disk refuses them even after the
        drop policy made room: nothing of that call was accepted.
        """
        if not items:
            return 0
        rows = [(p, d, len(b) + ROW_OVERHEAD, b) for p, d, b in items]

        def insert(db: sqlite3.Connection) -> int:
            cur = db.executemany(
                "INSERT INTO readings(prio, device, size, body) VALUES(?,?,?,?)", rows
            )
            first = int(db.execute("SELECT last_insert_rowid()").fetchone()[0]) - len(rows) + 1
            self._bump(db, "accepted", len(rows))
            self._commits.append((first, time.monotonic()))
            return cur.rowcount

        try:
            self._guard(insert)
        except sqlite3.OperationalError as exc:
            if not _is_full(exc):
                raise
            self.make_room(sum(r[2] for r in rows) * 4)
            try:
                self._guard(insert)
            except sqlite3.OperationalError as exc2:
                if not _is_full(exc2):
                    raise
                with self._lock:
                    self.counters["rejected_disk_full"] = self.counters.get(
                        "rejected_disk_full", 0
                    ) + len(rows)
                log.error("outbox_disk_full", refused=len(rows))
                raise StorageFull(str(exc2)) from exc2
        for p, _d, size, _b in rows:
            self.count_by_prio[p] += 1
            self.bytes_by_prio[p] += size
        if self.total_bytes() > self.max_bytes or self._disk_low():
            self.make_room(0)
        return len(rows)

    def total_bytes(self) -> int:
        return sum(self.bytes_by_prio)

    def _disk_low(self) -> bool:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < self.min_free_bytes

    def make_room(self, extra: int) -> int:
        """Apply the drop policy until the bound (less ``extra``) holds.

        Drops go oldest first within a class, classes in order telemetry,
        events, alerts. Returns how many readings were dropped.
        """
        target = max(0, int(self.max_bytes * 0.95) - extra)
        if self._disk_low():
            target = min(target, max(0, self.total_bytes() - max(extra, self.max_bytes // 20)))
        dropped = 0
        for prio in (Priority.TELEMETRY, Priority.EVENT, Priority.ALERT):
            while self.total_bytes() > target and self.count_by_prio[prio] > 0:
                over = self.total_bytes() - target
                n = self._drop_oldest(int(prio), over)
                if n == 0:
                    break
                dropped += n
        return dropped

    def _drop_oldest(self, prio: int, nbytes: int) -> int:
        def drop(db: sqlite3.Connection) -> tuple[int, int, int, int]:
            avg = max(1, self.bytes_by_prio[prio] // max(1, self.count_by_prio[prio]))
            limit = max(1, min(nbytes // avg + 1, 50_000))
            cur = db.execute(
                "SELECT min(seq), max(seq), count(*), coalesce(sum(size), 0) FROM "
                "(SELECT seq, size FROM readings WHERE prio=? ORDER BY seq LIMIT ?)",
                (prio, limit),
            )
            first, last, count, size = cur.fetchone()
            if not count:
                return 0, 0, 0, 0
            db.execute("DELETE FROM readings WHERE prio=? AND seq<=?", (prio, last))
            db.execute(
                "INSERT INTO drops(prio, first_seq, last_seq, count, at) VALUES(?,?,?,?,?)",
                (prio, first, last, count, time.time()),
            )
            self._bump(db, f"dropped_{Priority(prio).name.lower()}", count)
            return int(first), int(last), int(count), int(size)

        first, last, count, size = self._guard(drop)
        if count:
            self.count_by_prio[prio] -= count
            self.bytes_by_prio[prio] -= size
            log.warning(
                "outbox_dropped",
                priority=Priority(prio).name.lower(),
                count=count,
                first_seq=first,
                last_seq=last,
                bytes=size,
                bound=self.max_bytes,
            )
        return count

    # -- uplink side ---------------------------------------------------------

    def live_floor(self, window_s: float) -> int:
        """Lowest seq accepted within the last ``window_s`` seconds (live data)."""
        cutoff = time.monotonic() - window_s
        floor = None
        for first, at in reversed(self._commits):
            if at < cutoff:
                break
            floor = first
        return floor if floor is not None else (1 << 62)

    def waiting(self, prio: int) -> int:
        return self.count_by_prio[prio]

    def cut_batch(
        self,
        prio: int,
        encode: Encoder,
        *,
        gateway_id: str,
        max_readings: int,
        max_bytes: int,
        min_seq: int = 0,
        max_seq: int = 1 << 62,
        seal: Sealer | None = None,
    ) -> Batch | None:
        """Move the oldest waiting readings of ``prio`` in [min_seq, max_seq)
        into a new batch, or return None when there are none.

        With ``seal``, the payload is signed and chained in the same
        transaction that stores the chain state: a batch exists if and only if
        the chain advanced past it, and an exception from ``seal`` (the signer
        is down) leaves the readings where they were."""

        def cut(db: sqlite3.Connection) -> tuple[Batch | None, int]:
            picked: list[Row] = []
            size = 0
            cur = db.execute(
                "SELECT seq, body, size FROM readings WHERE prio=? AND seq>=? AND seq<? "
                "ORDER BY seq LIMIT ?",
                (prio, min_seq, max_seq, max_readings),
            )
            for seq, body, rsize in cur:
                if picked and size + len(body) > max_bytes:
                    break
                picked.append(Row(int(seq), prio, bytes(body)))
                size += int(rsize)
            if not picked:
                return None, 0
            drops = [
                Drop(int(p), int(f), int(last), int(c))
                for p, f, last, c in db.execute(
                    "SELECT prio, first_seq, last_seq, count FROM drops ORDER BY id"
                )
            ]
            bseq = _next_batch_seq(db)
            bid = f"{gateway_id}-{self.epoch}-{bseq}"
            payload = encode(bid, bseq, prio, picked, drops)
            if seal is not None:
                row = db.execute("SELECT value FROM meta WHERE key=?", (CHAIN_KEY,)).fetchone()
                payload, chain = seal(payload, str(row[0]) if row else None)
                db.execute(
                    "INSERT INTO meta VALUES(?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (CHAIN_KEY, chain),
                )
            db.execute(
                "INSERT INTO batches(seq, id, prio, count, created, payload) VALUES(?,?,?,?,?,?)",
                (bseq, bid, prio, len(picked), time.time(), payload),
            )
            db.executemany("DELETE FROM readings WHERE seq=?", [(r.seq,) for r in picked])
            if drops:
                db.execute("DELETE FROM drops")
            return Batch(bseq, bid, prio, len(picked), payload), size

        batch, size = self._guard(cut)
        if batch is not None:
            self.count_by_prio[prio] -= batch.count
            self.bytes_by_prio[prio] -= size
        return batch

    def pending_batches(self) -> list[Batch]:
        """Batches cut but not yet acknowledged, oldest first (after a restart)."""

        def read(db: sqlite3.Connection) -> list[Batch]:
            return [
                Batch(int(s), str(i), int(p), int(c), bytes(pl))
                for s, i, p, c, pl in db.execute(
                    "SELECT seq, id, prio, count, payload FROM batches ORDER BY prio, seq"
                )
            ]

        return self._guard(read)

    def ack(self, batch_seq: int) -> None:
        """The broker acknowledged the batch: forget it."""

        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM batches WHERE seq=?", (batch_seq,))
            self._bump(db, "batches_acked", 1)

        self._guard(delete)

    def stats(self) -> dict[str, object]:
        return {
            "readings_waiting": sum(self.count_by_prio),
            "bytes_waiting": self.total_bytes(),
            "by_priority": {
                Priority(p).name.lower(): {"readings": c, "bytes": b}
                for p, (c, b) in enumerate(zip(self.count_by_prio, self.bytes_by_prio, strict=True))
            },
            "bound_bytes": self.max_bytes,
            "counters": dict(self.counters),
        }


def _next_batch_seq(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
    return (int(row[0]) if row else 0) + 1


def _in_tx(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the first error says more
                db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _is_full(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _salvage(path: Path) -> tuple[list[tuple[int, str, bytes]], list[tuple[object, ...]]]:
    """Read what still reads from a corrupt outbox, page by page of rows."""
    rows: list[tuple[int, str, bytes]] = []
    batches: list[tuple[object, ...]] = []
    if not path.exists():
        return rows, batches
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows, batches
    try:
        try:
            batches = list(
                db.execute("SELECT id, prio, count, created, payload FROM batches ORDER BY seq")
            )
        except sqlite3.Error:
            batches = []
        last = 0
        skips = 0
        while skips < 10_000:
            try:
                chunk = db.execute(
                    "SELECT seq, prio, device, body FROM readings "
                    "WHERE seq>? ORDER BY seq LIMIT 1000",
                    (last,),
                ).fetchall()
            except sqlite3.Error:
                last += 1000
                skips += 1
                continue
            if not chunk:
                break
            for seq, prio, device, body in chunk:
                if isinstance(body, bytes) and prio in (0, 1, 2):
                    rows.append((int(prio), str(device), body))
                last = int(seq)
    except sqlite3.Error:
        pass
    finally:
        db.close()
    return rows, batches


def _prune_quarantine(path: Path, keep: int = 3) -> None:
    """Keep only the newest few corrupt files so recovery cannot fill the disk."""
    aside = sorted(path.parent.glob(path.name + ".corrupt-*"), key=lambda p: p.stat().st_mtime)
    mains = [p for p in aside if not p.name.endswith(("-wal", "-shm"))]
    for old in mains[:-keep]:
        for suffix in ("", "-wal", "-shm"):
            Path(str(old) + suffix).unlink(missing_ok=True)
