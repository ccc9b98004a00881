"""Uplink batch payloads (schema version 1, see docs/uplink.md). Pure.

A payload is a zlib (RFC 1950) stream of one UTF-8 JSON document. The
readings' JSON bodies are spliced in as stored in the outbox, each with its
outbox sequence number ``seq`` added in front, so encoding a batch never
parses or re-serialises a reading.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

from cityedge.outbox import Drop, Row
from cityedge.readings import Priority, Reading, format_ts, utc_now

SCHEMA_VERSION = 1
KINDS = {Priority.ALERT: "alerts", Priority.EVENT: "events", Priority.TELEMETRY: "telemetry"}
# The list a batch carries, by kind: readings, alert events, other events.
ITEMS = {"telemetry": "readings", "alerts": "alerts", "events": "events"}
MAX_PAYLOAD = 16 * 1024 * 1024  # refuse to inflate more than this when decoding


def reading_body(reading: Reading) -> bytes:
    """The stored form of a reading: compact JSON of its record."""
    return json.dumps(reading.to_record(), separators=(",", ":"), ensure_ascii=False).encode()


def encode_batch(
    batch_id: str,
    batch_seq: int,
    prio: int,
    rows: Sequence[Row],
    drops: Sequence[Drop],
    *,
    gateway_id: str,
    site_id: str,
    level: int = 6,
) -> bytes:
    """Build the compressed payload of one batch."""
    head = {
        "v": SCHEMA_VERSION,
        "batch": batch_id,
        "seq": batch_seq,
        "gateway": gateway_id,
        "site": site_id,
        "kind": KINDS[Priority(prio)],
        "created": format_ts(utc_now()),
        "count": len(rows),
        "dropped": [
            {
                "kind": KINDS[Priority(d.prio)],
                "first_seq": d.first_seq,
                "last_seq": d.last_seq,
                "count": d.count,
            }
            for d in drops
        ],
    }
    items = ITEMS[head["kind"]].encode()  # type: ignore[index]
    parts = [json.dumps(head, separators=(",", ":")).encode()[:-1], b',"%s":[' % items]
    for i, row in enumerate(rows):
        if i:
            parts.append(b",")
        parts.append(b'{"seq":%d,' % row.seq)
        parts.append(row.body[1:])
    parts.append(b"]}")
    return zlib.compress(b"".join(parts), level)


class BadPayload(ValueError):
    """An uplink payload that is not a valid version-1 batch."""


def decode_batch(payload: bytes) -> dict[str, Any]:
    """Inflate and parse a batch payload (for the hub side and for tests).

    A signed (v2) envelope is opened to its v1 body; checking its signature
    and chain is the verifier's job (cityedge.signing.verify).
    """
    from cityedge.signing.envelope import EnvelopeError, is_envelope, open_envelope

    if is_envelope(payload):
        try:
            payload = open_envelope(payload).body
        except EnvelopeError as exc:
            raise BadPayload(f"bad envelope: {exc}") from exc
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(payload, MAX_PAYLOAD)
        if inflater.unconsumed_tail:
            raise BadPayload("payload inflates past the size limit")
        doc = json.loads(raw)
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPayload(str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("v") != SCHEMA_VERSION:
        raise BadPayload("not a version 1 batch")
    items = ITEMS.get(str(doc.get("kind")))
    if items is None or not isinstance(doc.get(items), list):
        raise BadPayload("kind or its item list missing")
    return doc
