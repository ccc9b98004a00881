"""Alerts the cloud has not acknowledged yet (TinyDB: small, rarely written).

Every alert event is kept here until the cloud acknowledges its alert id; an
unacknowledged alert is sent again every ``resend_s``. A cleared alert that
was acknowledged is forgotten; so is a cleared one that went out
``CLEARED_RESENDS`` more times unacknowledged (the hub has it; a gateway
whose hub never acknowledges must not re-send every alert it ever raised,
for ever). At most ``MAX_KEPT`` alerts are kept: past that the oldest
cleared ones go first, then the oldest of all; each is counted and logged.

Safe from several threads (the sink, the resend loop, the status snapshot
and ack commands use it at once): one lock around every call. The file is
written atomically (:class:`cityedge.jsonstore.AtomicJSONStorage`), once
per change and once per resend round; a corrupt file is set aside
(counted, logged), never a crash loop.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import structlog
from tinydb import Query, TinyDB

from cityedge.jsonstore import AtomicJSONStorage

log = structlog.get_logger("cityedge.alerts")

MAX_KEPT = 1000  # alerts kept unacknowledged; the oldest cleared ones go first
CLEARED_RESENDS = 3  # a cleared alert is re-sent this many times unacknowledged, then forgotten


class AlertStore:
    def __init__(self, path: Path, resend_s: float = 300.0, max_kept: int = MAX_KEPT) -> None:
        self.path = path
        self.resend_s = resend_s
        self.max_kept = max_kept
        self.recovered = 0
        self.forgotten = {"cleared_unacknowledged": 0, "over_limit": 0}
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = TinyDB(str(path), storage=AtomicJSONStorage)
        self.table = self.db.table("alerts")
        self.table.all()  # parse now, not on first use
        storage: AtomicJSONStorage = self.db.storage  # type: ignore[assignment]
        for why in storage.corrupt:
            self.recovered += 1
            log.error("alert_store_corrupt_recovered", error=why)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def record(self, record: dict[str, Any], now: float | None = None) -> None:
        """Keep (or update) an alert's latest event until it is acknowledged."""
        now = time.time() if now is None else now
        q = Query()
        doc = {"alert_id": record["alert_id"], "record": record, "sent_at": now, "resent": 0,
               "acked": False, "cleared": record.get("transition") == "cleared",
               "since": now}  # fmt: skip
        with self._lock:
            old = self.table.get(q.alert_id == record["alert_id"])
            if isinstance(old, dict):
                doc["since"] = old.get("since", now)
                if old.get("acked"):
                    doc["acked"] = record.get("transition") != "escalated"  # needs a new ack
            if doc["acked"] and doc["cleared"]:
                self.table.remove(q.alert_id == record["alert_id"])
                return
            self.table.upsert(doc, q.alert_id == record["alert_id"])
            self._bound()

    def _bound(self) -> None:
        """At most ``max_kept`` alerts: the oldest cleared go first, then the oldest."""
        docs = self.table.all()
        excess = len(docs) - self.max_kept
        if excess <= 0:
            return
        order = sorted(docs, key=lambda d: (not d.get("cleared"), float(d.get("since", 0))))
        gone = [str(d["alert_id"]) for d in order[:excess]]
        self.table.remove(Query().alert_id.one_of(gone))
        self.forgotten["over_limit"] += len(gone)
        log.warning("alert_store_full", forgotten=len(gone), kept=self.max_kept,
                    hint="the hub is not acknowledging alerts (ack_alert)")  # fmt: skip

    def ack(self, alert_id: str) -> bool:
        """The cloud acknowledged an alert. False if it is not known (already forgotten)."""
        q = Query()
        with self._lock:
            doc = self.table.get(q.alert_id == alert_id)
            if not isinstance(doc, dict):
                return False
            if doc.get("cleared"):
                self.table.remove(q.alert_id == alert_id)
            else:
                self.table.update({"acked": True}, q.alert_id == alert_id)
            return True

    def due(self, now: float | None = None) -> list[dict[str, Any]]:
        """Unacknowledged alerts whose last send is older than resend_s; marks them resent.

        One write for the whole round. A cleared alert already re-sent
        ``CLEARED_RESENDS`` times is forgotten instead (counted, logged).
        """
        now = time.time() if now is None else now
        q = Query()
        out, updates, forget = [], [], []
        with self._lock:
            for doc in self.table.all():
                if doc.get("acked") or now - float(doc.get("sent_at", 0)) < self.resend_s:
                    continue
                resent = int(doc.get("resent", 0))
                if doc.get("cleared") and resent >= CLEARED_RESENDS:
                    forget.append(str(doc["alert_id"]))
                    continue
                updates.append(({"sent_at": now, "resent": resent + 1},
                                q.alert_id == doc["alert_id"]))  # fmt: skip
                out.append({**doc["record"], "resent": resent + 1})
            if updates:
                self.table.update_multiple(updates)
            if forget:
                self.table.remove(q.alert_id.one_of(forget))
                self.forgotten["cleared_unacknowledged"] += len(forget)
        if forget:
            log.info("alerts_forgotten_unacknowledged", count=len(forget),
                     resends=CLEARED_RESENDS)  # fmt: skip
        return out

    def unacked(self) -> int:
        with self._lock:
            return sum(1 for d in self.table.all() if not d.get("acked"))
