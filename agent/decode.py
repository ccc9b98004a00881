"""`cityedge decode KIND INPUT`: a payload console for technicians and support.

Uses the very codec functions the drivers use, prints the decoded fields as
JSON, and fails with exit code 1 and one clear line for input that does not
decode (bad MIC, bad checksum, truncated...).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from cityedge.drivers.base import DecodeError
from cityedge.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

KINDS = ("lorawan", "semtech-udp", "cayenne", "bthome", "ruuvi", "pms5003", "sds011", "nmea")


class UsageError(ValueError):
    """The command line itself is wrong (not the payload)."""


def add_parser(sub: Any) -> None:
    d = sub.add_parser(
        "decode",
        help="decode a payload with the drivers' own codecs (JSON out)",
        description="Decode one payload. INPUT is hex (spaces and colons allowed), "
        "the sentence text for nmea, or - to read it from standard input.",
    )
    d.add_argument("kind", choices=KINDS, metavar="KIND", help=", ".join(KINDS))
    d.add_argument("input", metavar="INPUT")
    d.add_argument("--nwkskey", help="LoRaWAN NwkSKey (32 hex digits): verifies the MIC")
    d.add_argument("--appskey", help="LoRaWAN AppSKey (32 hex digits): decrypts FRMPayload")
    d.add_argument("--appkey", help="LoRaWAN AppKey: verifies a JoinRequest, opens a JoinAccept")
    d.add_argument("--fcnt-hint", type=int, help="LoRaWAN: roughly the 32-bit frame counter")
    d.add_argument("--bindkey", help="BTHome bind key (32 hex digits)")
    d.add_argument("--mac", help="BLE MAC AA:BB:CC:DD:EE:FF (BTHome encryption nonce)")


def _hex(text: str, what: str, size: int | None = None) -> bytes:
    digits = re.sub(r"[\s:-]", "", text)
    if digits.lower().startswith("0x"):
        digits = digits[2:]
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise UsageError(f"{what} is not hex: {text!r}") from None
    if size is not None and len(data) != size:
        raise UsageError(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(data)}")
    return data


def _key(text: str | None, what: str) -> bytes | None:
    return None if text is None else _hex(text, what, 16)


def decode(args: argparse.Namespace) -> Any:
    """Decode per ``args``; raises DecodeError (bad payload) or UsageError."""
    raw = sys.stdin.read().strip() if args.input == "-" else args.input
    handlers: dict[str, Callable[[], Any]] = {
        "lorawan": lambda: _lorawan(raw, args),
        "semtech-udp": lambda: _semtech(raw),
        "cayenne": lambda: _cayenne(raw),
        "bthome": lambda: _bthome(raw, args),
        "ruuvi": lambda: _ruuvi(raw),
        "pms5003": lambda: _pms5003(raw),
        "sds011": lambda: _sds011(raw),
        "nmea": lambda: _nmea(raw),
    }
    return handlers[args.kind]()


def _lorawan(raw: str, args: argparse.Namespace) -> Any:
    from cityedge.drivers.lorawan import decode_frame

    return decode_frame(
        _hex(raw, "PHYPayload"),
        _key(args.nwkskey, "--nwkskey"),
        _key(args.appskey, "--appskey"),
        args.fcnt_hint,
        app_key=_key(args.appkey, "--appkey"),
    )


def _semtech(raw: str) -> Any:
    from cityedge.drivers.lorawan import decode_semtech

    return decode_semtech(_hex(raw, "datagram"))


def _cayenne(raw: str) -> Any:
    from cityedge.drivers.lorawan import decode_cayenne

    return decode_cayenne(_hex(raw, "payload"))


def _bthome(raw: str, args: argparse.Namespace) -> Any:
    from cityedge.drivers.ble import decode_bthome

    return decode_bthome(_hex(raw, "service data"), args.mac, _key(args.bindkey, "--bindkey"))


def _ruuvi(raw: str) -> Any:
    from cityedge.drivers.ble import decode_ruuvi

    return decode_ruuvi(_hex(raw, "manufacturer data"))


def _pms5003(raw: str) -> Any:
    from cityedge.drivers.serial import decode_pms5003

    return decode_pms5003(_hex(raw, "bytes"))


def _sds011(raw: str) -> Any:
    from cityedge.drivers.serial import decode_sds011

    return decode_sds011(_hex(raw, "bytes"))


def _nmea(raw: str) -> Any:
    from cityedge.drivers.serial import decode_nmea

    return decode_nmea(raw)


def run(args: argparse.Namespace) -> int:
    try:
        result = decode(args)
    except UsageError as exc:
        print(f"cityedge decode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DecodeError as exc:
        print(f"cityedge decode {args.kind}: does not decode: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ValueError as exc:  # a key of the wrong length and the like
        print(f"cityedge decode {args.kind}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return EXIT_OK
