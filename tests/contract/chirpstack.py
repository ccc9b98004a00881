"""Contract peer for the ChirpStack driver: a real Mosquitto carrying v4 uplink events.

The peer plays ChirpStack's MQTT integration: it publishes ``up`` events
(the Protobuf JSON shape of ``integration.UplinkEvent``, a decoded
``object``, a fresh ``deduplicationId`` and a rising ``fCnt`` each time) on
``application/<id>/device/<DevEUI>/event/up``. Device fault: an event that
is not JSON, a counted ``bad_json`` rejection. Transport loss: Mosquitto
terminated and started again on the same port; the source must notice the
lost connection, reconnect and subscribe again by itself.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.base import Source
from cityedge.drivers.lorawan.chirpstack import build_source
from cityedge.profiles import FieldMap
from tests.contract.base import ContractPeer, context
from tests.contract.serial import rejected
from tests.peers.forwarder import lora_profile
from tests.peers.modbus import Collector
from tests.peers.mqtt import Broker, free_port

APP_ID = "17c82e96-be03-4f38-aef3-f83d48582d97"
DEV_EUI = "0101010101010101"
TOPIC = f"application/{APP_ID}/device/{DEV_EUI}/event/up"
# The codec is ChirpStack's here; the profile only maps the decoded object's keys.
PROFILE = lora_profile(
    "cayenne",
    [FieldMap("temperature", "temperature", unit="Cel"),
     FieldMap("humidity", "humidity", unit="%"),
     FieldMap("battery.voltage", "battery_mv", unit="mV", scale=1000)],
)  # fmt: skip
EVENT: dict[str, Any] = {
    "time": "2024-05-01T12:00:00.123456789+00:00",
    "deviceInfo": {"applicationId": APP_ID, "deviceName": "climate", "devEui": DEV_EUI},
    "devAddr": "00189440",
    "fPort": 1,
    "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -97, "snr": 1.5}],
    "txInfo": {"frequency": 867100000},
}


class ChirpStackContractPeer(ContractPeer):
    name = "chirpstack-mqtt"
    device = "cs-1"
    clock_synced = False  # a gateway booted without NTP: readings say time_ok=False
    restimulate_s = 0.2

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        workdir = state_dir / "mosquitto"
        workdir.mkdir(parents=True, exist_ok=True)
        self.broker = Broker(workdir, free_port())
        self._fcnt = itertools.count(1)

    async def peer(self) -> AsyncIterator[None]:
        await asyncio.to_thread(self.broker.start)
        try:
            yield
        finally:
            await asyncio.to_thread(self.broker.stop)

    def source(self) -> Source:
        bus = BusConfig(name="cs", type="chirpstack-mqtt",
                        options={"broker": "127.0.0.1", "port": self.broker.port})  # fmt: skip
        dev = DeviceConfig(id=self.device, bus="cs", profile_name=PROFILE.name, profile=PROFILE,
                           options={"dev_eui": DEV_EUI})  # fmt: skip
        return build_source(bus, [dev], context(self.state_dir, synced=False))

    async def _publish(self, payload: bytes) -> None:
        await asyncio.to_thread(publish.single, TOPIC, payload, qos=1,
                                hostname="127.0.0.1", port=self.broker.port)  # fmt: skip

    async def stimulate(self) -> None:
        fcnt = next(self._fcnt)
        event = copy.deepcopy(EVENT)
        event.update(deduplicationId=str(uuid.uuid4()), fCnt=fcnt)
        event["object"] = {"temperature": 20 + fcnt / 10, "humidity": 50,
                           "battery": {"voltage": 3.6}}  # fmt: skip
        await self._publish(json.dumps(event).encode())

    async def device_fault(self) -> None:
        await self._publish(b'{"deviceInfo": {"devEui": "0101')  # cut short

    def fault_seen(self, sink: Collector, source: Source) -> bool:
        return rejected(source, "bad_json") >= 1

    async def cut(self) -> None:
        await asyncio.to_thread(self.broker.stop)

    def loss_seen(self, sink: Collector, source: Source) -> bool:
        lost = any(r.reason == "unreachable" for r in sink.of(self.device, False))
        return lost and source.status()["connected"] is False

    async def restore(self) -> None:
        await asyncio.to_thread(self.broker.start)
