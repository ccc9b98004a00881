"""A real Mosquitto broker on a free loopback port, and a recording subscriber."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityedge.uplink.codec import decode_batch
from cityedge.uplink.link import stop_loop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout_s: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TimeoutError(f"the process for port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Broker:
    workdir: Path
    port: int
    extra_conf: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            # Run as whoever runs the test: files in the test's tmp dir stay readable.
            "user root\n"
            # Persistent, so a subscriber's session and its queue survive a
            # broker restart, as on the city's hub.
            f"persistence true\npersistence_location {self.workdir}/\n"
            f"max_inflight_messages 0\nmax_queued_messages 100000\n{self.extra_conf}"
        )
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        try:
            wait_port(self.port, proc=self.proc)
        except TimeoutError:
            self.stop()
            raise RuntimeError((self.workdir / "mosquitto.log").read_text()[-2000:]) from None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto broker started for this test on a free loopback port."""
    b = Broker(tmp_path, free_port())
    b.start()
    try:
        yield b
    finally:
        b.stop()


@dataclass
class Recorder:
    """Subscribes (persistent session, QoS 1) and keeps every message."""

    port: int
    topic: str
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: mqtt.Client | None = None

    def start(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"recorder-{self.port}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        subscribed = threading.Event()

        def on_connect(cl: mqtt.Client, *_: object) -> None:
            cl.subscribe(self.topic, qos=1)

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((msg.topic, bytes(msg.payload)))

        c.on_connect = on_connect
        c.on_subscribe = lambda *_: subscribed.set()
        c.on_message = on_message
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("recorder did not subscribe")
        self.client = c

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            stop_loop(self.client)
            self.client = None

    def batches(self, kind: str | None = None) -> list[dict[str, object]]:
        with self.lock:
            msgs = list(self.messages)
        out = []
        for topic, payload in msgs:
            if not topic.endswith(("/telemetry", "/alerts", "/events")):
                continue  # state, the downlink's commands
            doc = decode_batch(payload)
            if kind is None or doc["kind"] == kind:
                out.append(doc)
        return out

    def readings(self) -> list[dict[str, object]]:
        return [r for b in self.batches("telemetry") for r in b["readings"]]  # type: ignore[attr-defined]

    def alerts(self) -> list[dict[str, object]]:
        return [a for b in self.batches("alerts") for a in b["alerts"]]  # type: ignore[attr-defined]

    def events(self) -> list[dict[str, object]]:
        return [e for b in self.batches("events") for e in b["events"]]  # type: ignore[attr-defined]

    def wait_for(self, n_readings: int, timeout_s: float = 20.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.readings()
            if len(got) >= n_readings:
                return got
            time.sleep(0.05)
        return self.readings()


@pytest.fixture
def recorder(broker: Broker) -> Iterator[Recorder]:
    """A subscriber to everything under cityedge/# on the test's broker."""
    r = Recorder(broker.port, "cityedge/#")
    r.start()
    try:
        yield r
    finally:
        r.stop()
