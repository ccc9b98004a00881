"""Alerts the cloud has not acknowledged yet (TinyDB: small, rarely written).

Every alert event is kept here until the cloud acknowledges its alert id; an
unacknowledged alert is sent again every ``resend_s``. A cleared alert that
was acknowledged is forgotten. The file is rewritten on every change, which
is fine at alert rates; a torn or corrupt file is moved aside and started
afresh (counted, logged), never a crash loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import structlog
from tinydb import Query, TinyDB

log = structlog.get_logger("cityedge.alerts")


class AlertStore:
    def __init__(self, path: Path, resend_s: float = 300.0) -> None:
        self.path = path
        self.resend_s = resend_s
        self.recovered = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = self._open()
        self.table = self.db.table("alerts")

    def _open(self) -> TinyDB:
        try:
            db = TinyDB(self.path)
            db.table("alerts").all()  # parse now, not on first use
            return db
        except (json.JSONDecodeError, ValueError, OSError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            self.recovered += 1
            log.error("alert_store_corrupt_recovered", error=str(exc), moved_to=str(aside))
            return TinyDB(self.path)

    def close(self) -> None:
        self.db.close()

    def record(self, record: dict[str, Any], now: float | None = None) -> None:
        """Keep (or update) an alert's latest event until it is acknowledged."""
        now = time.time() if now is None else now
        q = Query()
        doc = {"alert_id": record["alert_id"], "record": record, "sent_at": now, "resent": 0,
               "acked": False, "cleared": record.get("transition") == "cleared"}  # fmt: skip
        old = self.table.get(q.alert_id == record["alert_id"])
        if isinstance(old, dict) and old.get("acked"):
            doc["acked"] = record.get("transition") != "escalated"  # escalation needs a new ack
        if doc["acked"] and doc["cleared"]:
            self.table.remove(q.alert_id == record["alert_id"])
            return
        self.table.upsert(doc, q.alert_id == record["alert_id"])

    def ack(self, alert_id: str) -> bool:
        """The cloud acknowledged an alert. False if it is not known (already forgotten)."""
        q = Query()
        doc = self.table.get(q.alert_id == alert_id)
        if not isinstance(doc, dict):
            return False
        if doc.get("cleared"):
            self.table.remove(q.alert_id == alert_id)
        else:
            self.table.update({"acked": True}, q.alert_id == alert_id)
        return True

    def due(self, now: float | None = None) -> list[dict[str, Any]]:
        """Unacknowledged alerts whose last send is older than resend_s; marks them resent."""
        now = time.time() if now is None else now
        out = []
        for doc in self.table.all():
            if doc.get("acked") or now - float(doc.get("sent_at", 0)) < self.resend_s:
                continue
            resent = int(doc.get("resent", 0)) + 1
            self.table.update(
                {"sent_at": now, "resent": resent}, Query().alert_id == doc["alert_id"]
            )
            out.append({**doc["record"], "resent": resent})
        return out

    def unacked(self) -> int:
        return sum(1 for d in self.table.all() if not d.get("acked"))
