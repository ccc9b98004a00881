"""Config specs of the field drivers beyond Modbus: bus keys and device keys.

Each bus type has its own bus keys and its own per-device keys. What a
driver reads from a bus or device beyond the common fields of
:class:`~cityedge.config.model.BusConfig` / ``DeviceConfig`` lands in their
``options`` dict, already validated here.
"""

from __future__ import annotations

import re
from typing import Any

from cityedge.config.checks import (
    Check,
    Context,
    Field,
    Fields,
    Invalid,
    array,
    boolean,
    choice,
    integer,
    number,
    path,
    table,
    text,
)
from cityedge.config.toml_lines import Key, format_key


def rtu_unit_id() -> Check:
    """A Modbus RTU unit id: 1..247 (0 is the broadcast address, said so)."""
    base = integer(1, 247)
    allowed = "1..247 on modbus-rtu buses"

    def check(ctx: Context, value: Any, key: Key) -> int:
        if value == 0 and not isinstance(value, bool):
            raise Invalid("0 is the RTU broadcast address, not a device", allowed)
        try:
            return int(base(ctx, value, key))
        except Invalid as exc:
            raise Invalid(exc.message, allowed) from None

    return check


HOST = text(r"[A-Za-z0-9_.:%\[\]-]+", hint="a host name or IP address")
PORT = integer(1, 65535)
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)

# Which profile protocol each bus type speaks.
BUS_PROTOCOL = {
    "modbus-tcp": "modbus",
    "modbus-rtu": "modbus",
    "opcua": "opcua",
    "serial-sensor": "serial",
    "lorawan-udp": "lorawan",
    "chirpstack-mqtt": "lorawan",
    "ble": "ble",
}


def hex_bytes(n: int) -> Any:
    """A hex string of exactly ``n`` bytes (spaces, colons and dashes allowed)."""
    hint = f"{2 * n} hex digits"

    def check(ctx: Context, value: Any, key: Key) -> str:
        if not isinstance(value, str):
            raise Invalid("must be a string", hint)
        digits = re.sub(r"[\s:-]", "", value)
        if not re.fullmatch(rf"[0-9A-Fa-f]{{{2 * n}}}", digits):
            raise Invalid(f"must be {n} bytes in hex", hint)
        return digits.lower()

    return check


def _opc_endpoint(ctx: Context, value: Any, key: Key) -> str:
    hint = "opc.tcp://HOST:PORT[/path]"
    endpoint: str = text(hint=hint)(ctx, value, key)
    if not re.fullmatch(r"opc\.tcp://[^\s/]+(:\d+)?(/\S*)?", endpoint):
        raise Invalid("not an OPC UA endpoint URL", hint)
    return endpoint


def serial_port(ctx: Context, value: Any, key: Key) -> str:
    """A serial device path; not required to exist (USB adapters come and go)."""
    hint = "a device path such as /dev/ttyUSB0 or /dev/serial/by-id/..., COM3, or a pyserial URL"
    port: str = text(hint=hint)(ctx, value, key)
    if not (port.startswith("/") or re.fullmatch(r"COM\d+", port) or "://" in port):
        raise Invalid("not a serial port", hint)
    return port


def _mac(ctx: Context, value: Any, key: Key) -> str:
    hint = "AA:BB:CC:DD:EE:FF"
    mac: str = text(hint=hint)(ctx, value, key)
    if not re.fullmatch(r"([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}", mac):
        raise Invalid("not a Bluetooth MAC address", hint)
    return mac.upper().replace("-", ":")


# The serial line of a modbus-rtu or serial-sensor bus.
SERIAL_LINE: Fields = {
    "device": Field(serial_port, required=True),
    "baudrate": Field(choice(*BAUD_RATES)),
    "parity": Field(choice("N", "E", "O")),
    "stopbits": Field(choice(1, 2)),
    "bytesize": Field(choice(7, 8)),
}
TLS_FIELDS: Fields = {
    "ca_file": Field(path("file")),
    "cert_file": Field(path("file")),
    "key_file": Field(path("file")),
}

# Bus keys per type, beyond type and timeout_s (common to all buses).
BUS_OPTIONS: dict[str, Fields] = {
    "opcua": {
        "endpoint": Field(_opc_endpoint, required=True),
        "security_policy": Field(choice("None", "Basic256Sha256")),
        "security_mode": Field(choice("None", "Sign", "SignAndEncrypt")),
        "certificate": Field(path("file")),
        "private_key": Field(path("file")),
        "certificate_dir": Field(path()),
        "trust": Field(array(path("file"))),
        "username": Field(text(nonempty=False)),
        "password": Field(text(nonempty=False)),
        "mode": Field(choice("subscribe", "poll")),
        "publishing_interval_ms": Field(number(0, above=True)),
    },
    "serial-sensor": {
        **SERIAL_LINE,
        "silence_s": Field(number(0, above=True)),
    },
    "lorawan-udp": {
        "bind": Field(HOST),
        "port": Field(PORT),
        "max_datagram": Field(integer(64, 65507)),
        "net_id": Field(hex_bytes(3)),
        "rx1_delay_s": Field(integer(1, 15)),
        # Nothing from any packet forwarder for this long: the devices read unreachable.
        "silence_s": Field(number(1, 86400)),
    },
    "chirpstack-mqtt": {
        "broker": Field(HOST),
        "port": Field(PORT),
        "topic": Field(text()),
        "username": Field(text(nonempty=False)),
        "password": Field(text(nonempty=False)),
        "tls": Field(table(TLS_FIELDS)),
    },
    "ble": {
        "adapter": Field(text()),
        "scan_mode": Field(choice("passive", "active")),
        "dedupe_s": Field(number(0)),
        # No advert at all for this long: restart the scan (how an adapter that
        # vanished mid-scan is noticed; its devices then read "no_adapter").
        "silence_restart_s": Field(number(5, 86400)),
    },
}

# Device keys per bus type, beyond the common ones (id, bus, profile, ...).
DEVICE_OPTIONS: dict[str, Fields] = {
    "modbus-tcp": {"unit_id": Field(integer(0, 247), required=True)},
    "modbus-rtu": {"unit_id": Field(rtu_unit_id(), required=True)},
    "opcua": {},
    "serial-sensor": {"sensor_mode": Field(choice("active", "passive"))},
    "lorawan-udp": {
        "dev_eui": Field(hex_bytes(8), required=True),
        "activation": Field(choice("abp", "otaa")),
        "dev_addr": Field(hex_bytes(4)),
        "nwk_s_key": Field(hex_bytes(16)),
        "app_s_key": Field(hex_bytes(16)),
        "app_key": Field(hex_bytes(16)),
        "join_eui": Field(hex_bytes(8)),
        "relaxed_fcnt": Field(boolean()),
    },
    "chirpstack-mqtt": {"dev_eui": Field(hex_bytes(8), required=True)},
    "ble": {"mac": Field(_mac, required=True), "bind_key": Field(hex_bytes(16))},
}

LORAWAN_NEEDS = {
    "abp": ("dev_addr", "nwk_s_key", "app_s_key"),
    "otaa": ("app_key",),
}


def device_post(ctx: Context, bus_type: str, key: Key, values: dict[str, Any]) -> None:
    """Cross-field rules of a device's protocol keys."""
    if bus_type == "lorawan-udp":
        activation = _activation(ctx, key, values)
        for needed in LORAWAN_NEEDS.get(activation or "", ()):
            if needed not in values and (*key, needed) not in ctx.lines:
                ctx.report(key, f"missing required key {needed!r} for {activation} activation")


def _activation(ctx: Context, key: Key, values: dict[str, Any]) -> str | None:
    """A LoRaWAN device's activation; None when its value is invalid (and reported)."""
    if "activation" not in values and (*key, "activation") in ctx.lines:
        return None  # which keys it needs, or whether it is ABP, is unknown
    return str(values.get("activation", "abp"))


# One validated device: its key, its bus's name and type, and its good values.
DeviceEntry = tuple[Key, str, str, dict[str, Any]]


def check_radio_ids(ctx: Context, devices: list[DeviceEntry]) -> None:
    """LoRaWAN identities that would make one device steal another's uplinks.

    A DevEUI names one radio: two devices with the same one (on any LoRaWAN
    bus) leave one of them never joined or never heard. Two ABP devices on
    one bus may share a DevAddr (the network server tells them apart by the
    MIC, as the LoRaWAN spec allows), but not with the same NwkSKey too: then
    every uplink of both goes to the first one.
    """
    euis: dict[str, str] = {}  # DevEUI -> the first device that has it, as messages name it
    addrs: dict[tuple[str, str, str], str] = {}
    for key, bus, bus_type, values in devices:
        if BUS_PROTOCOL.get(bus_type) != "lorawan":
            continue
        who = f"device {values['id']!r}" if "id" in values else format_key(key)
        who += f" at line {ctx.line(key)}"
        eui = values.get("dev_eui")
        if eui in euis:
            allowed = "a DevEUI no other device has, whatever its case or separators"
            ctx.report((*key, "dev_eui"), f"same DevEUI as {euis[eui]}", allowed, eui)
        elif eui is not None:
            euis[eui] = who
        abp = bus_type == "lorawan-udp" and _activation(ctx, key, values) == "abp"
        addr, nwk_key = values.get("dev_addr"), values.get("nwk_s_key")
        if not abp or addr is None or nwk_key is None:
            continue
        session = (bus, addr, nwk_key)
        if session in addrs:
            message = f"same dev_addr and nwk_s_key as {addrs[session]}, which gets its uplinks"
            allowed = "a dev_addr or nwk_s_key no other ABP device on this bus has"
            ctx.report((*key, "dev_addr"), message, allowed, addr)
        else:
            addrs[session] = who
