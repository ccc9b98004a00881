"""The batch payload codec (schema version 1)."""

from __future__ import annotations

import contextlib
import json
import zlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityedge.outbox import Drop, Row
from cityedge.readings import Priority, Quality, Reading
from cityedge.uplink.codec import BadPayload, decode_batch, encode_batch, reading_body


def test_round_trip_keeps_every_field() -> None:
    """A batch decodes to its header, declared drops and readings with their seqs."""
    ts = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    good = Reading("m1", "voltage_l1", 231.5, "V", ts, family="energy", cell="33N_500_1_2")
    bad = Reading("m2", "voltage_l1", None, "V", ts, Quality.BAD, reason="modbus_exception", code=2)
    rows = [Row(7, 2, reading_body(good)), Row(9, 2, reading_body(bad))]
    payload = encode_batch("gw-e-3", 3, int(Priority.TELEMETRY), rows, [Drop(2, 1, 5, 5)],
                           gateway_id="gw", site_id="s")  # fmt: skip
    doc = decode_batch(payload)
    assert (doc["v"], doc["batch"], doc["seq"], doc["kind"], doc["count"]) == (
        1, "gw-e-3", 3, "telemetry", 2,
    )  # fmt: skip
    assert doc["dropped"] == [{"kind": "telemetry", "first_seq": 1, "last_seq": 5, "count": 5}]
    r0, r1 = doc["readings"]
    assert r0 == {"seq": 7, **good.to_record()}
    assert r0["ts"] == "2026-11-25T12:00:00.123456Z"
    assert (r1["seq"], r1["quality"], r1["reason"], r1["code"]) == (9, "bad", "modbus_exception", 2)


def test_compression_is_real() -> None:
    """A batch of similar readings compresses well below its JSON size."""
    ts = datetime.now(UTC)
    rows = [Row(i, 2, reading_body(Reading("m", "p", i * 0.5, "V", ts))) for i in range(200)]
    payload = encode_batch("b", 1, 2, rows, [], gateway_id="gw", site_id="s")
    assert len(payload) * 4 < len(zlib.decompress(payload))


@given(st.binary(max_size=2048))
def test_garbage_is_a_bad_payload(data: bytes) -> None:
    """Arbitrary bytes never raise anything but BadPayload."""
    with contextlib.suppress(BadPayload):
        decode_batch(data)


@pytest.mark.parametrize(
    "doc", [[], {"v": 2, "readings": []}, {"v": 1}, {"v": 1, "readings": {}}, "x"]
)
def test_wrong_shapes_are_refused(doc: object) -> None:
    """Valid JSON that is not a version-1 batch is refused by name."""
    with pytest.raises(BadPayload):
        decode_batch(zlib.compress(json.dumps(doc).encode()))


def test_zip_bomb_is_refused() -> None:
    """A payload inflating past the limit is refused, not inflated."""
    with pytest.raises(BadPayload, match="size limit"):
        decode_batch(zlib.compress(b" " * (17 * 1024 * 1024)))
