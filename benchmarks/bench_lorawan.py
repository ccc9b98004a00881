"""LoRaWAN uplinks handled per second through the driver's datagram path.

Builds real PUSH_DATA datagrams (one rxpk each, a Cayenne LPP payload of
temperature and humidity, encrypted and signed per device) for 100 ABP
devices, then feeds them to :meth:`LoRaWANSource.handle_datagram` of a
running source (its UDP socket open, the PUSH_ACKs really sent) and lets its
pump hand the readings to a counting sink. Measured per uplink: GWMP parse,
rxpk parse and base64, PHYPayload parse, MIC (AES-CMAC), FCnt inference and
replay check, the session write (TinyDB file, atomic replace), FRMPayload
decryption, the codec, [[fields]] mapping and Reading construction.

Two runs: with the session file fsync'ed on every accepted uplink (the
default, survives power loss) and without (survives a process crash).
Prints uplinks/s and CPU seconds per 10,000 uplinks.

    python benchmarks/bench_lorawan.py [--uplinks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.lorawan import phy, semtech
from cityedge.drivers.lorawan.driver import LoRaWANSource
from cityedge.drivers.lorawan.sessions import SessionStore
from cityedge.profiles import FieldMap, Profile
from cityedge.readings import Reading
from cityedge.sim.lora_sim import encode_lpp

DEVICES = 100
BATCH = 500

PROFILE = Profile(
    name="bench/lpp",
    vendor="bench",
    model="lpp",
    family="environment",
    protocol="lorawan",
    codec="cayenne",
    fields=(
        FieldMap("1.temperature", "temperature", unit="Cel", family="environment"),
        FieldMap("2.humidity", "humidity", unit="%", family="environment"),
    ),
)


def datagrams(n: int) -> list[bytes]:
    """n PUSH_DATA datagrams, round robin over the devices, counters rising."""
    out = []
    for i in range(n):
        dev, fcnt = i % DEVICES, i // DEVICES + 1
        key = bytes([dev]) * 16
        payload = encode_lpp([(1, "temperature", 15 + (i % 100) / 10), (2, "humidity", 55.5)])
        frame = phy.build_data_uplink(0x26000000 + dev, fcnt, 2, payload, key, key)
        rx = semtech.RxPacket(
            tmst=i * 1000,
            freq=868.1,
            chan=0,
            rfch=0,
            stat=1,
            modu="LORA",
            datr="SF7BW125",
            codr="4/5",
            rssi=-80,
            lsnr=7.0,
            size=len(frame),
            data=frame,
        )
        out.append(semtech.build_push_data(i & 0xFFFF, "AA555A0000000001", [rx]))
    return out


def devices() -> list[tuple[DeviceConfig, str]]:
    out = []
    for dev in range(DEVICES):
        key = (bytes([dev]) * 16).hex()
        options = {
            "dev_eui": f"70b3d5000000{dev:04x}",
            "dev_addr": f"{0x26000000 + dev:08x}",
            "nwk_s_key": key,
            "app_s_key": key,
        }
        out.append(
            (
                DeviceConfig(
                    id=f"d{dev}",
                    bus="lora",
                    profile_name=PROFILE.name,
                    profile=PROFILE,
                    options=options,
                ),
                "cell",
            )
        )
    return out


async def run(data: Sequence[bytes], fsync: bool) -> tuple[float, float, int]:
    got = 0
    done = asyncio.Event()

    async def sink(readings: Sequence[Reading]) -> None:
        nonlocal got
        got += len(readings)
        if got >= 2 * len(data):
            done.set()

    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(Path(tmp) / "lorawan.json", fsync=fsync)
        bus = BusConfig(name="lora", type="lorawan-udp", options={"port": 0})
        source = LoRaWANSource(bus, devices(), store, dedupe_s=0.0)
        task = asyncio.create_task(source.run(sink))
        while not source.connected:
            await asyncio.sleep(0.01)
        addr = ("127.0.0.1", 9)  # the PUSH_ACKs go to the discard port
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(data), BATCH):
            for datagram in data[start : start + BATCH]:
                source.handle_datagram(datagram, addr)
            await asyncio.sleep(0)  # let the pump deliver
        await asyncio.wait_for(done.wait(), 60)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not source.rejected, source.rejected
    return wall, cpu, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uplinks", type=int, default=20000)
    args = parser.parse_args()
    data = datagrams(args.uplinks)
    print(f"machine: {machine()}")
    print(f"{args.uplinks} uplinks from {DEVICES} ABP devices, 2 readings each")
    for fsync in (True, False):
        wall, cpu, got = asyncio.run(run(data, fsync))
        label = "fsync per uplink" if fsync else "no fsync        "
        print(
            f"{label}: {args.uplinks / wall:9.0f} uplinks/s, "
            f"{cpu / args.uplinks * 10_000:6.2f} CPU s per 10,000 uplinks, "
            f"{got} readings"
        )


if __name__ == "__main__":
    main()
