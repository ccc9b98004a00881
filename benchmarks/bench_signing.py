"""Signing costs: per batch and per reading (Ed25519 and hybrid Ed25519 + ML-DSA-65),
the signer daemon's round trip over its Unix socket, and verifier messages per
second on one core.

    python benchmarks/bench_signing.py [--batches N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, readings

from cityedge.outbox import Row
from cityedge.signing import keys
from cityedge.signing.algorithms import ED25519, HYBRID, SoftwareKey
from cityedge.signing.chain import BatchSealer, ChainState
from cityedge.signing.signer_client import LocalSigner, SyncSignerClient
from cityedge.signing.verify import Verifier
from cityedge.uplink.codec import encode_batch, reading_body

READINGS = 500
GW = "gw-bench-01"
TOPIC = f"cityedge/bench/{GW}/telemetry"


def bodies(n: int) -> list[bytes]:
    rows = [Row(i + 1, 2, reading_body(r)) for i, r in enumerate(readings(READINGS))]
    return [
        encode_batch(f"{GW}-e-{i}", i, 2, rows, [], gateway_id=GW, site_id="bench")
        for i in range(1, n + 1)
    ]


def per_call_us(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def seal_all(sealer: BatchSealer, items: list[bytes]) -> tuple[list[bytes], float]:
    state = ChainState.fresh()
    out = []
    t = time.perf_counter()
    for body in items:
        data, state = sealer.seal(body, state)
        out.append(data)
    return out, (time.perf_counter() - t) / len(items) * 1e6


def in_process(items: list[bytes]) -> tuple[dict[str, list[bytes]], dict[str, SoftwareKey]]:
    print(f"\n== sealing in process, batches of {READINGS} readings ({len(items)} batches)")
    body_size = statistics.mean(len(b) for b in items)
    t = time.perf_counter()
    bodies(min(len(items), 50))
    encode_us = (time.perf_counter() - t) / min(len(items), 50) * 1e6
    print(f"reference: v1 encode (zlib JSON) {encode_us:8.0f} us/batch, body {body_size:.0f} B")
    sealed, used = {}, {}
    for alg in (ED25519, HYBRID):
        key = used[alg] = SoftwareKey.generate(alg)
        out, us = seal_all(BatchSealer(LocalSigner(key), GW), items)
        overhead = statistics.mean(len(o) for o in out) - body_size
        print(
            f"{alg:16s} seal {us:8.1f} us/batch  {us / READINGS * 1000:7.1f} ns/reading"
            f"  envelope +{overhead:.0f} B (+{overhead / READINGS:.1f} B/reading)"
        )
        sealed[alg] = out
    return sealed, used


def start_signer(tmp: Path, alg: str) -> tuple[subprocess.Popen[bytes], Path]:
    mid = tmp / "machine-id"
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    kd = tmp / f"keys-{alg}"
    keys.init(kd, alg, machine_id_file=mid)
    sock = tmp / f"signer-{alg.replace('+', '-')}.sock"
    cmd = [sys.executable, "-m", "cityedge.signing.signer_server", "--key-dir", str(kd)]
    cmd += ["--socket", str(sock), "--allowed-uid", str(os.getuid())]
    cmd += ["--machine-id-file", str(mid), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while not sock.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("signer did not start")
        time.sleep(0.02)
    return proc, sock


def daemon(items: list[bytes], n: int) -> None:
    print(f"\n== signer daemon over its Unix socket ({n} requests each)")
    with tempfile.TemporaryDirectory() as d:
        for alg in (ED25519, HYBRID):
            proc, sock = start_signer(Path(d), alg)
            try:
                with SyncSignerClient(sock) as client:
                    sign = partial(client.sign, bytes(64), client.key_info().key_id)
                    lat = sorted(per_call_us(sign, n))
                    _, us = seal_all(BatchSealer(client, GW), items)
            finally:
                proc.terminate()
                proc.wait(10)
            p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
            print(
                f"{alg:16s} sign round trip p50 {p50:7.1f} us  p99 {p99:7.1f} us;"
                f"  whole batch seal {us:7.1f} us/batch ({us / READINGS * 1000:.0f} ns/reading)"
            )


def verifier(sealed: dict[str, list[bytes]], trusted: dict[str, SoftwareKey]) -> None:
    print("\n== verifier, one core")
    for alg, payloads in sealed.items():
        for inspect in (False, True):
            v = Verifier({GW: [trusted[alg].public]}, inspect_bodies=inspect)
            t = time.perf_counter()
            for p in payloads:
                v.feed(TOPIC, p)
            dt = time.perf_counter() - t
            assert v.report()[GW].verified == len(payloads)
            rate = len(payloads) / dt
            what = "signature+chain+declared drops" if inspect else "signature+chain"
            print(
                f"{alg:16s} {what:31s} {rate:8.0f} msg/s  {rate * READINGS / 1e6:6.2f} M readings/s"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=400)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    items = bodies(args.batches)
    sealed, used = in_process(items)
    daemon(items, args.batches * 5)
    verifier(sealed, used)


if __name__ == "__main__":
    main()
