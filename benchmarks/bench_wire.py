"""Bytes on the wire per reading: compressed batches against one JSON message
per reading, counted at the MQTT layer (PUBLISH header, topic, packet id,
properties, payload, and the PUBACK coming back).

    python benchmarks/bench_wire.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, readings

from cityedge.outbox import Row
from cityedge.uplink.codec import encode_batch, reading_body

TOPIC = "cityedge/demo-city/gw-demo-01/telemetry"
PUBACK = 4  # fixed header 2 + packet id 2 (MQTT 3.1.1; MQTT 5 success may omit the rest)


def varint_len(n: int) -> int:
    size = 1
    while n >= 128:
        n //= 128
        size += 1
    return size


def publish_bytes(topic: str, payload: int, props: int) -> int:
    """A QoS 1 PUBLISH: fixed header, topic, packet id, MQTT 5 properties, payload."""
    body = 2 + len(topic.encode()) + 2 + props + payload
    return 1 + varint_len(body) + body


def main() -> None:
    print(f"machine: {machine()}")
    data = readings(10_000)
    # One message per reading, on a per-point topic, the usual naive design.
    single = 0
    for i, r in enumerate(data):
        payload = json.dumps({"seq": i + 1, **r.to_record()}, separators=(",", ":")).encode()
        topic = f"{TOPIC}/{r.device}/{r.point}"
        single += publish_bytes(topic, len(payload), 1) + PUBACK
    print(f"one JSON message per reading: {single / len(data):7.1f} bytes/reading")
    props = len("content-type") + 40  # ContentType + user properties, roughly
    for size in (50, 200, 500, 1000):
        total = 0
        for i in range(0, len(data), size):
            chunk = data[i : i + size]
            rows = [Row(i + k + 1, 2, reading_body(r)) for k, r in enumerate(chunk)]
            payload = encode_batch("gw-demo-01-ab12cd34-1", 1, 2, rows, [],
                                   gateway_id="gw-demo-01", site_id="demo-city")  # fmt: skip
            total += publish_bytes(TOPIC, len(payload), props) + PUBACK
        ratio = single / total
        print(
            f"compressed batches of {size:>4}: {total / len(data):7.1f} bytes/reading "
            f"({ratio:4.1f}x fewer)"
        )


if __name__ == "__main__":
    main()
