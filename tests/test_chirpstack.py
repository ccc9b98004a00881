"""The ChirpStack MQTT source against a real Mosquitto: v4 uplink events become readings."""

from __future__ import annotations

import asyncio
import copy
import json
import math
from typing import Any

import paho.mqtt.publish as publish
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.lorawan.chirpstack import ChirpStackSource, flatten
from cityedge.profiles import FieldMap
from tests.peers.forwarder import lora_profile, until
from tests.peers.modbus import Collector, async_test, running
from tests.peers.mqtt import Broker

# The shape of ChirpStack v4's "up" event (integration.UplinkEvent, Protobuf JSON
# mapping), as in chirpstack.io/docs/chirpstack/integrations/events.html, with a
# decoded object as a device-profile codec yields it.
EVENT: dict[str, Any] = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:33:28.823500726+00:00",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
        "applicationName": "Test application",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "Test device-profile",
        "deviceName": "Test device",
        "devEui": "0101010101010101",
        "tags": {},
    },
    "devAddr": "00189440",
    "dr": 1,
    "fCnt": 4,
    "fPort": 1,
    "data": "AWcA4QJoUA==",
    "object": {"temperature": 22.5, "humidity": 40, "battery": {"voltage": 3.61}, "status": "ok"},
    "rxInfo": [
        {
            "gatewayId": "0016c001f153a14c",
            "uplinkId": 4217106255,
            "rssi": -97,
            "snr": 1.5,
            "context": "E3OWOQ==",
            "metadata": {"region_common_name": "EU868"},
        },
        {
            "gatewayId": "0016c001f1500812",
            "uplinkId": 1016422,
            "rssi": -36,
            "snr": 10.5,
            "context": "E3OWOQ==",
            "metadata": {"region_common_name": "EU868"},
        },
    ],
    "txInfo": {
        "frequency": 867100000,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 11, "codeRate": "CR_4_5"}},
    },
}
TOPIC = "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/0101010101010101/event/up"
PROFILE = lora_profile(
    "cayenne",  # the codec is ChirpStack's here; the profile only maps the object's keys
    [
        FieldMap("temperature", "temperature", unit="Cel"),
        FieldMap("humidity", "humidity", unit="%"),
        FieldMap("battery.voltage", "battery_mv", unit="mV", scale=1000),
    ],
)


def _source(broker: Broker) -> ChirpStackSource:
    bus = BusConfig(
        name="cs", type="chirpstack-mqtt", options={"broker": "127.0.0.1", "port": broker.port}
    )
    dev = DeviceConfig(
        id="cs-1",
        bus="cs",
        profile_name=PROFILE.name,
        profile=PROFILE,
        options={"dev_eui": "0101010101010101"},
    )
    return ChirpStackSource(bus, [(dev, "cell-1")], reopen_min_s=0.1, reopen_max_s=0.5)


async def _publish(broker: Broker, payload: bytes | str, topic: str = TOPIC) -> None:
    await asyncio.to_thread(
        publish.single, topic, payload, qos=1, hostname="127.0.0.1", port=broker.port
    )


def test_flatten_joins_nested_keys() -> None:
    """Nested objects and lists become dotted keys."""
    assert dict(flatten({"a": {"b": 1, "c": [5, {"d": 2}]}, "e": "x"})) == {
        "a.b": 1,
        "a.c.0": 5,
        "a.c.1.d": 2,
        "e": "x",
    }


def test_uplink_event_becomes_readings(broker: Broker) -> None:
    """A v4 uplink event through Mosquitto: values, units, scale, event time and radio meta."""

    @async_test
    async def run() -> None:
        source, sink = _source(broker), Collector()
        async with running(source, sink):
            await until(lambda: source.connected, 5.0)
            await _publish(broker, json.dumps(EVENT))
            await sink.wait_for(lambda: len(sink.readings) >= 3)
        got = {r.point: r for r in sink.readings}
        assert got["temperature"].value == 22.5 and got["temperature"].unit == "Cel"
        assert got["humidity"].value == 40 and got["battery_mv"].value == 3610.0
        r = got["temperature"]
        assert r.ts.isoformat() == "2022-07-18T09:33:28.823500+00:00"
        assert (r.meta["rssi"], r.meta["snr"], r.meta["gateway"]) == (-36, 10.5, "0016c001f1500812")
        assert (r.meta["fcnt"], r.meta["fport"], r.meta["freq"]) == (4, 1, 867.1)
        assert r.device == "cs-1" and r.cell == "cell-1"
        status = source.status()
        assert status["devices"]["cs-1"]["unmapped"] == 1  # type: ignore[index]

    run()


def test_bad_events_are_counted_and_the_source_keeps_running(broker: Broker) -> None:
    """Broken JSON, an unknown DevEUI, no object, a redelivered event: counted; good ones flow."""

    @async_test
    async def run() -> None:
        source, sink = _source(broker), Collector()
        stranger = copy.deepcopy(EVENT)
        stranger["deviceInfo"]["devEui"] = "0202020202020202"
        stranger["deduplicationId"] = "other"
        bare = copy.deepcopy(EVENT)
        del bare["object"]
        bare["deduplicationId"] = "bare"
        async with running(source, sink) as task:
            await until(lambda: source.connected, 5.0)
            await _publish(broker, b'{"deviceInfo": ')
            await _publish(broker, json.dumps(stranger))
            await _publish(broker, json.dumps(bare))
            await _publish(broker, json.dumps(EVENT))
            await _publish(broker, json.dumps(EVENT))  # the same deduplicationId again
            await until(lambda: source.counters["events"] >= 5, 5.0)
            assert not task.done()
        assert source.rejected == {"bad_json": 1, "unknown_dev_eui": 1, "no_object": 1}
        assert len(sink.readings) == 3 and source.counters["duplicates"] == 1

    run()


def test_broker_restart_is_survived(broker: Broker) -> None:
    """The broker goes away and comes back: its devices are reported unreachable once, and
    the source reconnects by itself."""

    @async_test
    async def run() -> None:
        source, sink = _source(broker), Collector()
        async with running(source, sink):
            await until(lambda: source.connected, 5.0)
            await asyncio.to_thread(broker.stop)
            await until(lambda: not source.connected, 5.0)
            await sink.wait_for(lambda: len(sink.readings) >= 1)
            await asyncio.sleep(1.0)  # reconnect attempts fail meanwhile: no second report
            bad = list(sink.readings)
            assert {r.point for r in bad} == {f.name for f in PROFILE.fields}
            assert all(r.quality == "bad" and r.reason == "unreachable" for r in bad)
            assert len(bad) == len(PROFILE.fields)  # once per outage, not per attempt
            assert source.status()["devices"]["cs-1"]["state"] == "unreachable"
            await asyncio.to_thread(broker.start)
            await until(lambda: source.connected, 10.0)
            await _publish(broker, json.dumps(EVENT))
            await sink.wait_for(lambda: len(sink.readings) >= len(bad) + 3)
        assert source.counters["reconnects"] >= 2
        assert source.status()["devices"]["cs-1"]["state"] == "ok"

    run()


def test_uplinks_sent_while_the_source_is_away_wait_at_the_broker(broker: Broker) -> None:
    """A persistent session: events published while the agent is stopped arrive when it is back."""

    @async_test
    async def run() -> None:
        source, sink = _source(broker), Collector()
        async with running(source, sink):
            await until(lambda: source.connected, 5.0)  # the session exists now
        away = copy.deepcopy(EVENT)
        away["deduplicationId"] = "while-away"
        away["object"]["temperature"] = 7.25
        await _publish(broker, json.dumps(away))
        source2, sink2 = _source(broker), Collector()
        async with running(source2, sink2):
            await sink2.wait_for(lambda: any(r.value == 7.25 for r in sink2.readings), 10.0)

    run()


def _bad_values_event() -> str:
    """An event whose decoder sent text, a boolean, null and 1e400, and fCnt as text."""
    event = copy.deepcopy(EVENT)
    event["deduplicationId"] = "bad-values"
    event["object"] = {"temperature": "3426", "humidity": True, "battery": {"voltage": None}}
    event["fCnt"] = "twelve"
    text = json.dumps(event)
    other = copy.deepcopy(EVENT)
    other["deduplicationId"] = "infinite"
    other["object"] = {"temperature": "__HUGE__", "humidity": 40}
    return text + "\n" + json.dumps(other).replace('"__HUGE__"', "1e400")


def test_values_that_are_not_finite_numbers_become_counted_bad_readings(broker: Broker) -> None:
    """Text, booleans, null and 1e400 from ChirpStack's decoder are bad readings with a named
    reason, counted and logged; fCnt "twelve" stays out of meta; nothing serialises to Infinity."""

    @async_test
    async def run() -> None:
        source, sink = _source(broker), Collector()
        bad, infinite = _bad_values_event().split("\n")
        with capture_logs() as logs:
            async with running(source, sink):
                await until(lambda: source.connected, 5.0)
                await _publish(broker, bad)
                await _publish(broker, infinite)
                await sink.wait_for(lambda: len(sink.readings) >= 5)
        first = {r.point: r for r in sink.readings[:3]}
        assert {p: (r.quality, r.reason, r.value) for p, r in first.items()} == {
            "temperature": ("bad", "not_a_number", None),
            "humidity": ("bad", "not_a_number", None),
            "battery_mv": ("bad", "not_available", None),
        }
        assert "fcnt" not in first["temperature"].meta and first["temperature"].meta["fport"] == 1
        temp, hum = sink.readings[3:5]
        assert (temp.quality, temp.reason, temp.value) == ("bad", "not_finite", None)
        assert (hum.quality, hum.value, hum.meta["fcnt"]) == ("good", 40, 4)
        for r in sink.readings:
            json.dumps(r.to_record(), allow_nan=False)  # raises on inf or nan
        assert source.rejected == {"not_a_number": 2, "not_available": 1, "not_finite": 1,
                                   "bad_meta": 1}  # fmt: skip
        assert source.status()["devices"]["cs-1"]["errors_total"] == 5  # type: ignore[index]
        rejected = [e for e in logs if e["event"] in ("value_rejected", "meta_rejected")]
        assert len(rejected) == 5 and all(e["device"] == "cs-1" for e in rejected)
        assert any("fCnt 'twelve'" in e["error"] for e in rejected)

    run()


def test_a_decoder_that_keeps_sending_text_is_counted_every_time_logged_once(
    broker: Broker,
) -> None:
    """The same bad value on every uplink: every one counted, one log line per second."""

    @async_test
    async def run() -> None:
        source, sink = _source(broker), Collector()
        bad = _bad_values_event().split("\n")[0]
        with capture_logs() as logs:
            async with running(source, sink):
                await until(lambda: source.connected, 5.0)
                for i in range(10):  # ten uplinks, each its own deduplicationId
                    await _publish(broker, bad.replace('"bad-values"', f'"bad-values-{i}"'))
                await sink.wait_for(lambda: len(sink.readings) >= 30)
        assert source.rejected["not_a_number"] == 20  # two fields, ten uplinks
        lines = [e for e in logs if e["event"] == "value_rejected"]
        # Ten uplinks arrive well within a second: one line per field and reason.
        assert 2 <= len([e for e in lines if e["reason"] == "not_a_number"]) <= 4

    run()


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (3.61, (3610.0, None)),
        (0, (0, None)),
        ("3.61", (None, "not_a_number")),
        (False, (None, "not_a_number")),
        (None, (None, "not_available")),
        (math.inf, (None, "not_finite")),
        (math.nan, (None, "not_finite")),
        (10**400, (None, "not_finite")),
        (1e307, (None, "not_finite")),  # finite, but not once scaled by 1000
    ],
    ids=["float", "zero", "text", "bool", "null", "inf", "nan", "huge_int", "overflow"],
)
def test_object_values_are_checked_before_scaling(raw: Any, want: tuple[Any, Any]) -> None:
    """A decoded object value: a finite number is scaled, anything else gets a reason."""
    source = ChirpStackSource(
        BusConfig(name="cs", type="chirpstack-mqtt", options={}),
        [(_source_device(), "cell-1")],
    )
    event = copy.deepcopy(EVENT)
    event["object"] = {"battery": {"voltage": raw}}
    (reading,) = source.handle_event(json.dumps(event).encode())
    assert (reading.value, reading.reason) == want
    assert reading.quality == ("good" if want[1] is None else "bad")
    assert source.rejected == ({} if want[1] is None else {want[1]: 1})


def _source_device() -> DeviceConfig:
    return DeviceConfig(id="cs-1", bus="cs", profile_name=PROFILE.name, profile=PROFILE,
                        options={"dev_eui": "0101010101010101"})  # fmt: skip


_KEYS = ["temperature", "humidity", "battery", "voltage"]
_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=8),
)


@settings(max_examples=200, deadline=None)
@given(
    obj=st.recursive(
        _LEAF,
        lambda inner: st.dictionaries(st.sampled_from(_KEYS), inner),
        max_leaves=6,
    ),
    fcnt=_LEAF,
    rssi=_LEAF,
    freq=_LEAF,
)
def test_any_decoded_object_gives_good_numbers_or_counted_bad_readings(
    obj: Any, fcnt: Any, rssi: Any, freq: Any
) -> None:
    """Whatever ChirpStack's decoder and radio fields hold, nothing raises; a reading is a
    good finite number or a bad one with a reason, each bad one counted; JSON stays strict."""
    source = ChirpStackSource(
        BusConfig(name="cs", type="chirpstack-mqtt", options={}), [(_source_device(), "c")]
    )
    event = {**EVENT, "fCnt": fcnt, "txInfo": {"frequency": freq}}
    event["rxInfo"] = [{"gatewayId": "0016c001f153a14c", "rssi": rssi, "snr": 1.5}]
    event["object"] = obj if isinstance(obj, dict) else {"temperature": obj}
    readings = source.handle_event(json.dumps(event).encode())
    bad = [r for r in readings if r.quality == "bad"]
    for r in readings:
        json.dumps(r.to_record(), allow_nan=False)
        assert (r.value is None and r.reason) if r.quality == "bad" else math.isfinite(r.value)
    assert sum(source.rejected.values()) >= len(bad)
    assert "internal_error" not in source.rejected
