"""`cityedge demo`: the agent against simulated devices on loopback, live.

Starts a Mosquitto broker on a free loopback port and at least one simulated
device per driver, all on loopback:

* Modbus TCP: a pymodbus server with energy meters, a climate sensor and a
  solar charge controller (the shipped profiles, values that move);
* OPC UA: an asyncua server with a pumping station whose tank level crosses
  the profile's alert threshold once per pump cycle;
* serial: a PMS5003 particulate sensor and a GPS on pseudo-terminals;
* LoRaWAN: a Semtech packet forwarder emulator sending real AES-encrypted,
  MIC-signed ABP uplinks of a Cayenne LPP weather node and a Dragino LDDS75;
* BLE: a RuuviTag and Shelly BLU H&T tags (BTHome plain and encrypted)
  replayed through bleak's own scanner and detection callback.

It writes a config for them, runs the real agent in this process and a
subscriber standing in for the hub. A live view shows every device, readings
per second, batches acknowledged, backlog and alerts. Half a minute in, the
broker is stopped for ten seconds, so the outbox can be seen buffering and
then draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityedge import logs
from cityedge.agent import Agent
from cityedge.config.loader import load_config
from cityedge.config.profile_loader import load_profile
from cityedge.drivers.ble.driver import BleSource
from cityedge.drivers.ble.driver import build_source as build_ble_source
from cityedge.drivers.lorawan.driver import LoRaWANSource
from cityedge.drivers.lorawan.driver import build_source as build_lora_source
from cityedge.signing import keys
from cityedge.signing.algorithms import PublicKey
from cityedge.signing.verify import Verifier
from cityedge.sim.ble_sim import BleSim, SimTag
from cityedge.sim.lora_sim import ForwarderEmulator, encode_lpp
from cityedge.sim.modbus_sim import ModbusSim
from cityedge.sim.opcua_sim import OpcUaSim
from cityedge.sim.serial_sim import PtySensor, nmea_builder, pms5003_builder
from cityedge.uplink.codec import BadPayload, decode_batch
from cityedge.uplink.link import stop_loop

OUTAGE_AT_S = 30.0
OUTAGE_FOR_S = 10.0
SITE = (52.5163, 13.3777)

MODBUS = [  # (id, unit, profile, poll interval s)
    ("meter-main", 1, "eastron/sdm630", 1.0),
    ("meter-pumps", 2, "eastron/sdm630", 1.0),
    ("meter-lights", 3, "eastron/sdm630", 2.0),
    ("cabinet-climate", 10, "xy/xy-md02", 5.0),
    ("solar-light-17", 20, "epever/tracer", 2.0),
]
LORA = [  # (id, profile, dev_addr, uplink every s)
    ("weather-roof", "cayenne/generic", "26011F01", 5.0),
    ("stormwater-tank", "dragino/ldds75", "26011F02", 6.0),
]
BLE = [  # (id, profile, MAC, encrypted)
    ("ruuvi-bus-stop", "ruuvi/ruuvitag", "C7:3A:5E:10:20:31", False),
    ("ht-kiosk", "shelly/blu-ht", "38:39:8F:70:11:02", False),
    ("ht-substation", "shelly/blu-ht", "38:39:8F:70:11:03", True),
]
SHOW = {  # a point per profile to show in the live view
    "eastron/sdm630": "voltage_l1_n",
    "xy/xy-md02": "temperature",
    "epever/tracer": "battery_soc",
    "cityedge-sim/pump-station": "tank_level",
    "plantower/pms5003": "pm2_5",
    "u-blox/neo-6m": "satellites",
    "cayenne/generic": "temperature",
    "dragino/ldds75": "distance",
    "ruuvi/ruuvitag": "temperature",
    "shelly/blu-ht": "temperature",
}


def demo_key(device: str, what: str) -> bytes:
    """A fixed 16-byte key per device (the demo's devices are provisioned with these)."""
    return hashlib.sha256(f"cityedge demo {device} {what}".encode()).digest()[:16]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
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
        if c and (Path(c) / "cityedge-sim" / "pump-station.toml").is_file():
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

    def __init__(self, port: int, gateway_keys: dict[str, list[PublicKey]]) -> None:
        self.lock = threading.Lock()
        self.verifier = Verifier(gateway_keys)
        self.findings: Counter[str] = Counter()
        self.readings = 0
        self.batches = 0
        self.bad_payloads = 0
        self.latest: dict[str, tuple[str, Any, str]] = {}
        self.per_device: Counter[str] = Counter()
        self.alerts: deque[dict[str, Any]] = deque(maxlen=3)
        self.alerts_total = 0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-hub", clean_session=False,
                        protocol=mqtt.MQTTv311)  # fmt: skip
        c.on_connect = lambda cl, *_: cl.subscribe("cityedge/#", qos=1)
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 2)
        c.connect_async("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.endswith(("/telemetry", "/alerts", "/events")):
            return  # state, keys, attestation: not batches
        payload = bytes(msg.payload)
        try:
            doc = decode_batch(payload)
        except BadPayload:
            self.bad_payloads += 1
            return
        with self.lock:
            self.findings.update(f.kind for f in self.verifier.feed(msg.topic, payload))
            self.batches += 1
            for a in doc.get("alerts", ()):
                self.alerts_total += 1
                self.alerts.append(a)
            for r in doc.get("readings", ()):
                self.readings += 1
                self.per_device[r["device"]] += 1
                self.latest[f"{r['device']}/{r['point']}"] = (r["ts"], r["value"], r["unit"])

    def close(self) -> None:
        self.client.disconnect()
        stop_loop(self.client)


@dataclass
class Ports:
    mqtt: int = field(default_factory=free_port)
    modbus: int = field(default_factory=free_port)
    opcua: int = field(default_factory=free_port)
    lora: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))


def _table(header: str, **keys: object) -> list[str]:
    def value(v: object) -> str:
        return f'"{v}"' if isinstance(v, str | Path) else str(v)

    return ["", header, *(f"{k} = {value(v)}" for k, v in keys.items())]


def _device(dev_id: str, bus: str, profile: str, **keys: object) -> list[str]:
    return _table("[[devices]]", id=dev_id, bus=bus, profile=profile, **keys)


def write_config(workdir: Path, ports: Ports, pdir: Path) -> Path:
    # Absolute paths: the loader reads relative ones against the config file's
    # folder, which is workdir itself (demo-state/demo-state/signer.sock).
    workdir = workdir.resolve()
    lines = [f'profiles_dir = "{pdir}"', 'log_level = "warning"']
    lines += _table("[site]", id="demo-city", gateway_id="gw-demo-01",
                    latitude=SITE[0], longitude=SITE[1])  # fmt: skip
    lines += _table("[buses.cabinet]", type="modbus-tcp", host="127.0.0.1",
                    port=ports.modbus, max_in_flight=2, timeout_s=0.5)  # fmt: skip
    lines += _table("[buses.pumps]", type="opcua", endpoint=f"opc.tcp://127.0.0.1:{ports.opcua}/",
                    publishing_interval_ms=500, timeout_s=2.0)  # fmt: skip
    lines += _table("[buses.uart-pm]", type="serial-sensor", device=workdir / "ttyPMS",
                    baudrate=9600, silence_s=5)  # fmt: skip
    lines += _table("[buses.uart-gps]", type="serial-sensor", device=workdir / "ttyGPS",
                    baudrate=9600, silence_s=5)  # fmt: skip
    lines += _table("[buses.lora]", type="lorawan-udp", bind="127.0.0.1", port=ports.lora)
    lines += _table("[buses.ble]", type="ble", adapter="hci0", scan_mode="passive")
    lines += _table("[uplink]", broker="127.0.0.1", port=ports.mqtt, batch_max_age_s=0.5,
                    reconnect_min_s=0.5, reconnect_max_s=4.0)  # fmt: skip
    lines += _table("[storage]", path=workdir / "outbox.sqlite", max_bytes="64MiB")
    lines += _table("[signing]", socket=workdir / "signer.sock")
    for dev, unit, profile, interval in MODBUS:
        lines += _device(dev, "cabinet", profile, unit_id=unit, poll_interval_s=interval)
    lines += _device("pump-station-3", "pumps", "cityedge-sim/pump-station")
    lines += _device("air-quality-1", "uart-pm", "plantower/pms5003")
    lines += _device("gps-1", "uart-gps", "u-blox/neo-6m")
    for dev, profile, addr, _every in LORA:
        lines += _device(dev, "lora", profile, dev_eui=f"A84041000000{addr[-4:]}",
                         activation="abp", dev_addr=addr, nwk_s_key=demo_key(dev, "nwk").hex(),
                         app_s_key=demo_key(dev, "app").hex())  # fmt: skip
    for dev, profile, mac, encrypted in BLE:
        keys: dict[str, object] = {"mac": mac}
        if encrypted:
            keys["bind_key"] = demo_key(dev, "bind").hex()
        lines += _device(dev, "ble", profile, **keys)
    path = workdir / "demo.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def lora_payload(profile: str, t: float, rng: random.Random) -> tuple[int, bytes]:
    """(FPort, payload) of a simulated uplink at ``t`` seconds."""
    if profile == "cayenne/generic":
        daylight = max(0.0, math.sin(t / 300)) * 20000
        return 1, encode_lpp([
            (1, "temperature", round(14 + 2 * math.sin(t / 200) + rng.gauss(0, 0.1), 1)),
            (2, "humidity", round(2 * (62 + rng.gauss(0, 1))) / 2),
            (3, "barometer", round(1013 + rng.gauss(0, 0.3), 1)),
            (4, "illuminance", round(daylight + 300)),
            (5, "analog_input", 3.61),
        ])  # fmt: skip
    distance = round(1500 + 400 * math.sin(t / 150) + rng.gauss(0, 5))  # mm to the surface
    return 2, (
        (3300 | 0xC000).to_bytes(2, "big") + distance.to_bytes(2, "big") + b"\x00"
        + round(10 * (13.5 + rng.gauss(0, 0.1))).to_bytes(2, "big", signed=True) + b"\x01"
    )  # fmt: skip


class Devices:
    """Every simulated device, started before the agent and stopped after it."""

    def __init__(self, workdir: Path, ports: Ports, pdir: Path) -> None:
        self.ports = ports
        units = {unit: load_profile(pdir, profile) for _d, unit, profile, _i in MODBUS}
        self.modbus = ModbusSim(units, port=ports.modbus)
        self.opcua = OpcUaSim(ports.opcua)
        self.pms = PtySensor(workdir / "ttyPMS", pms5003_builder())
        self.gps = PtySensor(workdir / "ttyGPS", nmea_builder(*SITE))
        tags = [SimTag(mac, "ruuvi" if p.startswith("ruuvi") else "bthome", every_s=2.0,
                       bind_key=demo_key(d, "bind") if enc else None, base_temp=10 + i)
                for i, (d, p, mac, enc) in enumerate(BLE)]  # fmt: skip
        self.ble = BleSim(tags)
        self.uplinks = 0
        self._lora: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.modbus.start()
        await self.opcua.start()
        await self.pms.start()
        await self.gps.start()
        await self.ble.start()
        self._lora = asyncio.create_task(self._lora_devices(), name="lora-sim")

    async def _lora_devices(self) -> None:
        """A packet forwarder with the LoRaWAN devices in its range."""
        rng = random.Random()
        async with ForwarderEmulator(("127.0.0.1", self.ports.lora), keepalive_s=2.0) as gw:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            due = [t0 + 1.0 + i for i in range(len(LORA))]
            fcnt = [0] * len(LORA)
            while True:
                now = loop.time()
                for i, (dev, profile, addr, every) in enumerate(LORA):
                    if now >= due[i]:
                        due[i] = now + every
                        fport, payload = lora_payload(profile, now - t0, rng)
                        gw.send_uplink(addr, fcnt[i], fport, payload, demo_key(dev, "nwk"),
                                       demo_key(dev, "app"), rssi=rng.randint(-112, -85),
                                       snr=round(rng.uniform(-3, 9), 1))  # fmt: skip
                        fcnt[i] += 1
                        self.uplinks += 1
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._lora is not None:
            self._lora.cancel()
            await asyncio.gather(self._lora, return_exceptions=True)
        await self.ble.stop()
        await self.gps.stop()
        await self.pms.stop()
        await self.opcua.stop()
        await self.modbus.stop()


def use_simulators(agent: Agent, ble: BleSim) -> None:
    """Rebuild sources the simulators need built differently (before agent.run()).

    The BLE source gets the simulator's scanner factory. The LoRaWAN source
    gets its bus's ``port``: the config loader keeps ``port`` as the common
    bus field while the driver reads ``bus.options["port"]`` (else 1700).
    """
    for i, src in enumerate(agent.sources):
        if isinstance(src, BleSource):
            devices = [d for d in agent.config.devices if d.bus == src.bus.name]
            agent.sources[i] = build_ble_source(src.bus, devices, agent.source_ctx,
                                                scanner_factory=ble.factory())  # fmt: skip
        elif isinstance(src, LoRaWANSource) and "port" not in src.bus.options:
            bus = replace(src.bus, options={**src.bus.options, "port": src.bus.port})
            devices = [d for d in agent.config.devices if d.bus == bus.name]
            agent.sources[i] = build_lora_source(bus, devices, agent.source_ctx)


class Signer:
    """The signer daemon in its own process, with a key made for the demo."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "signer.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        key_dir, machine_id = self.workdir / "keys", self.workdir / "machine-id"
        if not machine_id.exists():
            machine_id.write_text(secrets.token_hex(16) + "\n")
        if not (key_dir / "current").exists():
            shutil.rmtree(key_dir, ignore_errors=True)
            keys.init(key_dir, machine_id_file=machine_id)
        cmd = [sys.executable, "-m", "cityedge.signing.signer_server", "--key-dir", str(key_dir),
               "--socket", str(self.socket), "--machine-id-file", str(machine_id),
               "--allowed-uid", str(os.getuid()), "--log-level", "warning"]  # fmt: skip
        with open(self.workdir / "signer.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                s.connect(str(self.socket))
                return
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"cityedge demo: the signer did not start (see {self.workdir}/signer.log)")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _device_rows(agent: Agent, hub: Hub) -> list[str]:
    statuses: dict[str, tuple[str, dict[str, Any]]] = {}
    for src in agent.sources:
        st = src.status()
        devices = st.get("devices", {})
        for dev_id, ds in devices.items() if isinstance(devices, dict) else ():
            statuses[dev_id] = (str(st.get("type", "?")), ds)
    out = [f"{'device':<17}{'bus':<14}{'state':<9}{'frames':>7}{'errors':>7}{'at hub':>8}"
           "  last value at hub"]  # fmt: skip
    with hub.lock:
        for dev in agent.config.devices:
            bus_type, ds = statuses.get(dev.id, ("?", {}))
            point = SHOW.get(dev.profile_name, dev.profile.fields[0].name if dev.profile.fields
                             else "")  # fmt: skip
            ts, value, unit = hub.latest.get(f"{dev.id}/{point}", ("", None, ""))
            shown = f"{point} = {value} {unit}  ({ts[11:23]})" if ts else ""
            count = ds.get("frames") or ds.get("polls") or 0
            out.append(
                f"{dev.id:<17}{bus_type:<14}{ds.get('state', '?')!s:<9}{count:>7}"
                f"{ds.get('errors_total', 0):>7}{hub.per_device[dev.id]:>8}  {shown}"
            )
    return out


def _alert_lines(agent: Agent, hub: Hub) -> list[str]:
    raised = ", ".join(f"{lvl.label} {n}" for lvl, n in agent.alerts.tracker.raised.items())
    out = [f"alerts raised: {raised}; active {len(agent.alerts.tracker.active())}; "
           f"at hub {hub.alerts_total}"]  # fmt: skip
    with hub.lock:
        for a in hub.alerts:
            where = f"{a['device']}/{a['point']}"
            out.append(f"  {a['ts'][11:19]} {a['transition']:<9} {a['level']:<6} "
                       f"{where} = {a['value']} {a.get('unit', '')}")  # fmt: skip
    return out


def _signature_line(hub: Hub) -> str:
    with hub.lock:
        verified = sum(r.verified for r in hub.verifier.report().values())
        findings = ", ".join(f"{k} {n}" for k, n in sorted(hub.findings.items())) or "none"
    return f"signed batches verified at hub {verified:>6}   verifier findings: {findings}"


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
        _signature_line(hub),
        "",
        *_device_rows(agent, hub),
        "",
        *_alert_lines(agent, hub),
    ]
    return "\n".join(out)


STATE_FILES = ("outbox.sqlite*", "lorawan-*.json", "ble.json*", "alerts.json*")


def fresh_workdir(workdir: Path) -> None:
    """A clean start: no outbox, frame counters or alerts of an earlier run."""
    workdir.mkdir(parents=True, exist_ok=True)
    for pattern in STATE_FILES:
        for old in workdir.glob(pattern):
            old.unlink()


@dataclass
class DemoReport:
    """What the demo saw, for its last words and for tests."""

    accepted: int
    delivered: int
    per_device: dict[str, int]  # readings at the hub
    statuses: dict[str, dict[str, Any]]  # source name -> status()
    alerts_at_hub: int
    bad_payloads: int
    verified: int  # batches whose signature and chain checked at the hub
    findings: dict[str, int]  # the hub's verifier findings by kind


class Outage:
    """The drill: the broker stops at ``at_s`` for ``for_s`` seconds (None: no drill)."""

    def __init__(self, broker: Broker, at_s: float | None, for_s: float) -> None:
        self.broker = broker
        self.window = None if at_s is None else (at_s, at_s + for_s)

    def tick(self, t: float) -> str:
        if self.window is None:
            return ""
        start, end = self.window
        if start <= t < end:
            if self.broker.proc is not None:
                self.broker.stop()
            return f"(broker stopped for the outage drill, back in {end - t:.0f} s)"
        if t >= end:
            self.broker.start()
            self.window = None
        return ""


async def _demo(
    workdir: Path,
    seconds: float,
    *,
    outage_at_s: float | None = OUTAGE_AT_S,
    outage_for_s: float = OUTAGE_FOR_S,
    show: bool = True,
) -> DemoReport:
    fresh_workdir(workdir)
    pdir = profiles_dir()
    ports = Ports()
    broker = Broker(workdir, ports.mqtt)
    broker.start()
    signer = Signer(workdir)
    signer.start()
    devices = Devices(workdir, ports, pdir)
    await devices.start()
    config = load_config(write_config(workdir, ports, pdir))
    agent = Agent(config, summary_every_s=3600)
    use_simulators(agent, devices.ble)
    hub = Hub(ports.mqtt, {config.site.gateway_id: keys.public_keys(workdir / "keys")})
    task = asyncio.create_task(agent.run())
    tty = sys.stdout.isatty()
    t0 = time.monotonic()
    last = (t0, 0, 0)
    outage = Outage(broker, outage_at_s, outage_for_s)
    try:
        while not task.done() and (seconds <= 0 or time.monotonic() - t0 < seconds):
            await asyncio.sleep(1.0)
            now = time.monotonic()
            note = outage.tick(now - t0)
            rates = (
                (agent.writer.accepted - last[1]) / (now - last[0]),
                (hub.readings - last[2]) / (now - last[0]),
            )
            last = (now, agent.writer.accepted, hub.readings)
            if show:
                view = render(agent, hub, now - t0, rates, note)
                print(("\x1b[H\x1b[2J" if tty else "\n") + view, flush=True)
    except asyncio.CancelledError:
        pass
    finally:
        statuses = {src.name: src.status() for src in agent.sources}
        agent.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        if agent.signer is not None:  # Agent.run leaves its signer connection open
            agent.signer.close()
        hub.close()
        await devices.stop()
        signer.stop()
        broker.stop()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise RuntimeError("the agent stopped on an error") from task.exception()
    verified = sum(r.verified for r in hub.verifier.report().values())
    return DemoReport(agent.writer.accepted, hub.readings, dict(hub.per_device), statuses,
                      hub.alerts_total, hub.bad_payloads, verified, dict(hub.findings))  # fmt: skip


def run_demo(workdir: Path, seconds: float) -> int:
    logs.configure("warning")
    workdir = workdir.resolve()  # the default --workdir is relative (demo-state)
    try:
        report = asyncio.run(_demo(workdir, seconds))
    except KeyboardInterrupt:
        return 0
    print(
        f"\ndemo over: {report.accepted} readings accepted, {report.delivered} delivered "
        f"to the hub (the difference was still in flight or in the outbox at {workdir})."
    )
    return 0
