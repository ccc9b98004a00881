"""The durable outbox against real SQLite files."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from cityedge.outbox import Drop, Outbox, Row, StorageFull
from cityedge.readings import Priority

T, E, A = int(Priority.TELEMETRY), int(Priority.EVENT), int(Priority.ALERT)


def body(n: int, pad: int = 0) -> bytes:
    return json.dumps({"device": "d", "point": "p", "value": n, "pad": "x" * pad}).encode()


def enc(bid: str, seq: int, prio: int, rows: Sequence[Row], drops: Sequence[Drop]) -> bytes:
    return json.dumps(
        {
            "id": bid,
            "values": [json.loads(r.body)["value"] for r in rows],
            "drops": [[d.prio, d.first_seq, d.last_seq, d.count] for d in drops],
        }
    ).encode()


def cut(ob: Outbox, prio: int = T, n: int = 100, **kw: int):  # type: ignore[no-untyped-def]
    return ob.cut_batch(prio, enc, gateway_id="gw", max_readings=n, max_bytes=1 << 20, **kw)


@pytest.fixture
def outbox(tmp_path: Path):  # type: ignore[no-untyped-def]
    ob = Outbox(tmp_path / "outbox.sqlite", max_bytes=1 << 30)
    ob.open()
    yield ob
    ob.close()


def test_accept_cut_ack(outbox: Outbox) -> None:
    """Accepted readings come out in order in a batch, and leave only when acked."""
    outbox.accept([(T, "d", body(i)) for i in range(10)])
    batch = cut(outbox, n=4)
    assert batch is not None and json.loads(batch.payload)["values"] == [0, 1, 2, 3]
    assert outbox.waiting(T) == 6
    assert [b.id for b in outbox.pending_batches()] == [batch.id]
    outbox.ack(batch.seq)
    assert outbox.pending_batches() == []


def test_pending_batch_survives_reopen_with_same_id(tmp_path: Path) -> None:
    """A cut, unacknowledged batch is re-offered after a restart with its id and bytes."""
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 30)
    ob.open()
    ob.accept([(T, "d", body(i)) for i in range(5)])
    batch = cut(ob)
    assert batch is not None
    ob.close()
    ob2 = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 30)
    ob2.open()
    [again] = ob2.pending_batches()
    assert (again.id, again.payload) == (batch.id, batch.payload)
    nxt = ob2.accept([(T, "d", body(9))]) and cut(ob2)
    assert nxt and nxt.seq > batch.seq and nxt.id != batch.id
    ob2.close()


def test_byte_bound_drops_oldest_routine_first(tmp_path: Path) -> None:
    """Over the bound, oldest telemetry goes first, then events; alerts stay; all counted."""
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=20_000)
    ob.open()
    ob.accept([(A, "d", body(i, 100)) for i in range(20)])
    ob.accept([(E, "d", body(100 + i, 100)) for i in range(20)])
    for k in range(10):
        ob.accept([(T, "d", body(1000 + 10 * k + i, 100)) for i in range(10)])
    assert ob.total_bytes() <= 20_000
    assert ob.waiting(A) == 20 and ob.waiting(E) == 20
    dropped_t = ob.counters["dropped_telemetry"]
    assert dropped_t > 0 and ob.waiting(T) == 100 - dropped_t
    batch = cut(ob, T, 1000)
    assert batch is not None
    values = json.loads(batch.payload)["values"]
    assert values == list(range(1000 + dropped_t, 1100)), "the newest telemetry is kept"
    drops = json.loads(batch.payload)["drops"]
    assert sum(d[3] for d in drops) == dropped_t and all(d[0] == T for d in drops)
    # Now only events and alerts: more of them pushes events out before alerts.
    ob.accept([(A, "d", body(5000 + i, 100)) for i in range(100)])
    assert ob.counters.get("dropped_event", 0) > 0
    assert ob.counters.get("dropped_alert", 0) == 0 or ob.waiting(E) == 0
    ob.close()


def test_disk_full_refuses_and_counts(tmp_path: Path) -> None:
    """A full disk (SQLITE_FULL) refuses new readings, counted; accepted ones stay."""
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 30, max_page_count=40)
    ob.open()
    accepted = 0
    with pytest.raises(StorageFull):
        for i in range(2000):
            accepted += ob.accept([(T, "d", body(i, 200))])
    assert ob.counters["rejected_disk_full"] >= 1
    ob.close()
    ob2 = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 30)
    ob2.open()
    assert ob2.waiting(T) + ob2.counters.get("dropped_telemetry", 0) == accepted
    ob2.close()


def _corrupt(path: Path, at: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


@pytest.mark.parametrize("damage", ["header", "truncate", "garbage_page"])
def test_corrupt_file_is_recovered(tmp_path: Path, damage: str) -> None:
    """A damaged outbox file is moved aside and salvaged; the agent keeps working."""
    path = tmp_path / "o.sqlite"
    ob = Outbox(path, max_bytes=1 << 30, durability="full")
    ob.open()
    for k in range(20):
        ob.accept([(T, "d", body(100 * k + i, 50)) for i in range(100)])
    ob.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    if damage == "header":
        _corrupt(path, 0, b"this is not sqlite" * 4)
    elif damage == "truncate":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    else:
        _corrupt(path, size // 2, b"\xff" * 4096)
    ob2 = Outbox(path, max_bytes=1 << 30)
    ob2.open()
    # Damage may surface at open or at first use; either way it must recover.
    ob2.accept([(T, "d", body(99999))])
    batch = cut(ob2, T, 5000)
    assert batch is not None
    values = json.loads(batch.payload)["values"]
    assert values[-1] == 99999
    assert ob2.counters.get("corrupt_recoveries", 0) >= (0 if damage == "garbage_page" else 1)
    assert list(tmp_path.glob("o.sqlite.corrupt-*")) or damage == "garbage_page"
    ob2.close()


def test_live_floor_splits_live_from_backlog(outbox: Outbox) -> None:
    """Readings committed just now are live; rows from before the window are backlog."""
    outbox.accept([(T, "d", body(i)) for i in range(5)])
    outbox._commits.clear()  # as after a restart: nothing of it is recent
    outbox.accept([(T, "d", body(100 + i)) for i in range(3)])
    floor = outbox.live_floor(10.0)
    live = cut(outbox, min_seq=floor)
    backlog = cut(outbox, max_seq=floor)
    assert live and json.loads(live.payload)["values"] == [100, 101, 102]
    assert backlog and json.loads(backlog.payload)["values"] == [0, 1, 2, 3, 4]
