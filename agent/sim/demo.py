"""`cityedge demo`: the agent against simulated devices on loopback, live.

Starts a Mosquitto broker on a free loopback port, simulated Modbus devices
(the shipped profiles, values that move), writes a config for them, runs the
real agent in this process and a subscriber that decodes what the broker
delivers. A live view shows per-device status, readings per second, batches
acknowledged and backlog. Half a minute in, the broker is stopped for ten
seconds, so the outbox can be seen buffering and then draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityedge import logs
from cityedge.agent import Agent
from cityedge.config.loader import load_config
from cityedge.config.profile_loader import load_profile
from cityedge.sim.modbus_sim import ModbusSim

OUTAGE_AT_S = 30.0
OUTAGE_FOR_S = 10.0

DEVICES = [  # (id, unit, profile, poll interval s)
    ("meter-main", 1, "eastron/sdm630", 1.0),
    ("meter-pumps", 2, "eastron/sdm630", 1.0),
    ("meter-lights", 3, "eastron/sdm630", 2.0),
    ("cabinet-climate", 10, "xy/xy-md02", 5.0),
    ("solar-light-17", 20, "epever/tracer", 2.0),
]
SHOW = {  # a point per profile to show in the live view
    "eastron/sdm630": "voltage_l1_n",
    "xy/xy-md02": "temperature",
    "epever/tracer": "battery_soc",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def profiles_dir() -> Path:
    """The shipped profiles: $CITYEDGE_PROFILES, ./firmware-profiles, or installed."""
    candidates = [
        os.environ.get("CITYEDGE_PROFILES", ""),
        "firmware-profiles",
        str(Path(sys.prefix) / "share" / "cityedge" / "firmware-profiles"),
        str(Path(__file__).resolve().parents[2] / "firmware-profiles"),
    ]
    for c in candidates:
        if c and (Path(c) / "eastron" / "sdm630.toml").is_file():
            return Path(c).resolve()
    raise SystemExit("cityedge demo: cannot find firmware-profiles/ (set CITYEDGE_PROFILES)")


class Broker:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser root\n"
            f"persistence true\npersistence_location {self.workdir}/\n"
        )
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise SystemExit(f"cityedge demo: mosquitto did not start (see {self.workdir})")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Hub:
    """A subscriber standing in for the city's data hub."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.readings = 0
        self.batches = 0
        self.latest: dict[str, tuple[str, Any, str]] = {}
        self.per_device: Counter[str] = Counter()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-hub", clean_session=False,
                        protocol=mqtt.MQTTv311)  # fmt: skip
        c.on_connect = lambda cl, *_: cl.subscribe("cityedge/#", qos=1)
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 2)
        c.connect_async("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/state"):
            return
        import json

        doc = json.loads(zlib.decompress(msg.payload))
        with self.lock:
            self.batches += 1
            for r in doc["readings"]:
                self.readings += 1
                self.per_device[r["device"]] += 1
                self.latest[f"{r['device']}/{r['point']}"] = (r["ts"], r["value"], r["unit"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def write_config(workdir: Path, port: int, modbus_port: int, pdir: Path) -> Path:
    lines = [
        f'profiles_dir = "{pdir}"',
        'log_level = "warning"',
        "",
        "[site]",
        'id = "demo-city"',
        'gateway_id = "gw-demo-01"',
        "latitude = 52.5163",
        "longitude = 13.3777",
        "",
        "[buses.cabinet]",
        'type = "modbus-tcp"',
        'host = "127.0.0.1"',
        f"port = {modbus_port}",
        "max_in_flight = 2",
        "timeout_s = 0.5",
        "",
        "[uplink]",
        'broker = "127.0.0.1"',
        f"port = {port}",
        "batch_max_age_s = 0.5",
        "reconnect_min_s = 0.5",
        "reconnect_max_s = 4.0",
        "",
        "[storage]",
        f'path = "{workdir / "outbox.sqlite"}"',
        'max_bytes = "64MiB"',
    ]
    for dev, unit, profile, interval in DEVICES:
        lines += [
            "",
            "[[devices]]",
            f'id = "{dev}"',
            'bus = "cabinet"',
            f"unit_id = {unit}",
            f'profile = "{profile}"',
            f"poll_interval_s = {interval}",
        ]
    path = workdir / "demo.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def render(agent: Agent, hub: Hub, t: float, rates: tuple[float, float], note: str) -> str:
    st = agent.sender.stats
    ob = agent.outbox
    out = [
        f"cityedge demo  t={t:5.0f} s  uplink: {st.state:<12} {note}",
        f"accepted {agent.writer.accepted:>8}  ({rates[0]:7.0f}/s)   delivered to hub "
        f"{hub.readings:>8}  ({rates[1]:7.0f}/s)",
        f"batches acked {st.batches_acked:>6}  live {st.live_batches:>5}  backlog "
        f"{st.backlog_batches:>5}  reconnects {st.reconnects}   outbox waiting "
        f"{sum(ob.count_by_prio):>7} readings, {ob.total_bytes() / 1024:8.1f} KiB",
        "",
        f"{'device':<18}{'state':<11}{'polls':>7}{'errors':>8}{'at hub':>9}  last value at hub",
    ]
    devices: dict[str, Any] = {}
    for src in agent.sources:
        found = src.status().get("devices", {})
        if isinstance(found, dict):
            devices.update(found)
    with hub.lock:
        for dev, _unit, profile, _i in DEVICES:
            ds = devices.get(dev, {})
            key = f"{dev}/{SHOW[profile]}"
            ts, value, unit = hub.latest.get(key, ("", None, ""))
            shown = f"{SHOW[profile]} = {value} {unit}  ({ts[11:23]})" if ts else ""
            out.append(
                f"{dev:<18}{ds.get('state', '?'):<11}{ds.get('polls', 0):>7}"
                f"{ds.get('errors_total', 0):>8}{hub.per_device[dev]:>9}  {shown}"
            )
    return "\n".join(out)


def fresh_workdir(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("outbox.sqlite*"):
        old.unlink()


async def _demo(workdir: Path, seconds: float) -> int:
    fresh_workdir(workdir)
    pdir = profiles_dir()
    port, modbus_port = free_port(), free_port()
    broker = Broker(workdir, port)
    broker.start()
    units = {unit: load_profile(pdir, profile) for _d, unit, profile, _i in DEVICES}
    sim = ModbusSim(units, port=modbus_port)
    await sim.start()
    config = load_config(write_config(workdir, port, modbus_port, pdir))
    agent = Agent(config, summary_every_s=3600)
    hub = Hub(port)
    task = asyncio.create_task(agent.run())
    tty = sys.stdout.isatty()
    t0 = time.monotonic()
    last = (t0, 0, 0)
    outage: tuple[float, float] | None = (OUTAGE_AT_S, OUTAGE_AT_S + OUTAGE_FOR_S)
    try:
        while not task.done() and (seconds <= 0 or time.monotonic() - t0 < seconds):
            await asyncio.sleep(1.0)
            now = time.monotonic()
            t = now - t0
            note = ""
            if outage and outage[0] <= t < outage[1]:
                if broker.proc is not None:
                    broker.stop()
                note = f"(broker stopped for the outage drill, back in {outage[1] - t:.0f} s)"
            elif outage and t >= outage[1]:
                broker.start()
                outage = None
            rates = (
                (agent.writer.accepted - last[1]) / (now - last[0]),
                (hub.readings - last[2]) / (now - last[0]),
            )
            last = (now, agent.writer.accepted, hub.readings)
            view = render(agent, hub, t, rates, note)
            print(("\x1b[H\x1b[2J" if tty else "\n") + view, flush=True)
    except asyncio.CancelledError:
        pass
    finally:
        agent.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        hub.close()
        await sim.stop()
        broker.stop()
    print(
        f"\ndemo over: {agent.writer.accepted} readings accepted, {hub.readings} delivered "
        f"to the hub (the difference was still in flight or in the outbox at {workdir})."
    )
    return 0


def run_demo(workdir: Path, seconds: float) -> int:
    logs.configure("warning")
    try:
        return asyncio.run(_demo(workdir, seconds))
    except KeyboardInterrupt:
        return 0
