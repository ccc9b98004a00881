"""The unacknowledged-alert store: safe across threads, atomic on disk, bounded."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from cityedge.alert_store import CLEARED_RESENDS, AlertStore


def rec(alert_id: str, transition: str = "raised") -> dict[str, Any]:
    return {"alert_id": alert_id, "transition": transition, "level": "yellow",
            "device": "d", "point": "p"}  # fmt: skip


def test_many_threads_at_once_leave_a_whole_file(tmp_path: Path) -> None:
    """record, due, ack and unacked from four threads (the sink, the resend loop, status,
    commands): no error, and the file parses with every alert in it."""
    store = AlertStore(tmp_path / "alerts.json", resend_s=0.0)
    errors: list[BaseException] = []

    def run(work: Any) -> None:
        try:
            for i in range(150):
                work(i)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    jobs = [
        lambda i: store.record(rec(f"a{i}")),
        lambda i: store.due(),
        lambda i: store.unacked(),
        lambda i: store.ack(f"a{i // 2}"),
    ]
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    store.close()
    doc = json.loads((tmp_path / "alerts.json").read_text())
    assert len(doc["alerts"]) == 150
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_a_cleared_alert_nobody_acknowledges_is_forgotten_after_its_resends(
    tmp_path: Path,
) -> None:
    store = AlertStore(tmp_path / "alerts.json", resend_s=10.0)
    store.record(rec("up"), now=0.0)
    store.record(rec("gone", "cleared"), now=0.0)
    sent = [sorted(r["alert_id"] for r in store.due(now=20.0 * k)) for k in range(1, 6)]
    # The cleared one goes out CLEARED_RESENDS more times; the raised one until acknowledged.
    assert [("gone" in s) for s in sent] == [True] * CLEARED_RESENDS + [False] * 2
    assert all("up" in s for s in sent)
    assert store.forgotten["cleared_unacknowledged"] == 1 and store.unacked() == 1


def test_the_store_keeps_at_most_its_limit_oldest_cleared_first(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.json", max_kept=5)
    store.record(rec("old-raised"), now=1.0)
    for i in range(3):
        store.record(rec(f"cleared-{i}", "cleared"), now=2.0 + i)
    for i in range(3):
        store.record(rec(f"new-{i}"), now=10.0 + i)
    kept = {d["alert_id"] for d in store.table.all()}
    assert kept == {"old-raised", "cleared-2", "new-0", "new-1", "new-2"}
    assert store.forgotten["over_limit"] == 2


def test_a_resend_round_is_one_write(tmp_path: Path) -> None:
    """A round over many alerts rewrites the file once, not once per alert."""
    store = AlertStore(tmp_path / "alerts.json", resend_s=1.0)
    for i in range(200):
        store.record(rec(f"a{i}"), now=0.0)
    writes = 0
    storage = store.db.storage
    original = storage.write

    def counting(data: Any) -> None:
        nonlocal writes
        writes += 1
        original(data)

    storage.write = counting  # type: ignore[method-assign]
    assert len(store.due(now=5.0)) == 200
    assert writes == 1


def test_a_corrupt_file_is_set_aside_and_only_the_newest_copies_kept(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    for _ in range(5):
        path.write_text('{"alerts": {"1": {"alert_id": "x"}}}}')  # one brace too many
        store = AlertStore(path)
        assert store.recovered == 1 and store.unacked() == 0
        store.close()
    assert len(list(tmp_path.glob("alerts.json.corrupt-*"))) == 3
