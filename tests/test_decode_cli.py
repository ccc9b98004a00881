"""`cityedge decode`: every published vector through the command, and clear failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cityedge.cli import main

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(["decode", *args])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else None), out.err


def close(got: Any, want: Any) -> bool:
    if isinstance(want, float) or isinstance(got, float):
        return abs(float(got) - float(want)) < 1e-6
    if isinstance(want, list):
        return len(got) == len(want) and all(close(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want)


@pytest.mark.parametrize("vec", load("lorawan.json")["vectors"], ids=lambda v: v["phy_payload"])
def test_lorawan_vectors(capsys: pytest.CaptureFixture[str], vec: dict[str, Any]) -> None:
    """Each LoRaWAN vector: MIC verified, fields and decrypted payload as published."""
    code, got, err = run(capsys, "lorawan", vec["phy_payload"], "--nwkskey", vec["nwk_s_key"],
                         "--appskey", vec["app_s_key"])  # fmt: skip
    assert code == 0, err
    want = vec["expect"]
    assert got["mtype"] == want["mtype"] and got["dev_addr"] == want["dev_addr"]
    assert got["fcnt"] == want["fcnt"] and got["fport"] == want["fport"]
    assert got["mic"].upper() == want["mic"].upper() and got["mic_ok"] is want["mic_valid"]
    assert got["payload"].upper() == want["frm_payload_plain"].upper()


def test_lorawan_bad_mic_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A flipped MIC byte is refused with exit code 1 and says so."""
    vec = load("lorawan.json")["vectors"][0]
    bad = vec["phy_payload"][:-2] + ("00" if vec["phy_payload"][-2:] != "00" else "01")
    code, _, err = run(capsys, "lorawan", bad, "--nwkskey", vec["nwk_s_key"])
    assert code == 1 and "bad_mic" in err


@pytest.mark.parametrize("vec", load("cayenne_lpp.json")["vectors"], ids=lambda v: v["hex"])
def test_cayenne_vectors(capsys: pytest.CaptureFixture[str], vec: dict[str, Any]) -> None:
    """Each Cayenne LPP vector decodes to its published channels, types and values."""
    code, got, err = run(capsys, "cayenne", vec["hex"])
    assert code == 0, err
    assert len(got) == len(vec["expect"])
    for g, w in zip(got, vec["expect"], strict=True):
        assert (g["channel"], g["type"]) == (w["channel"], w["type"])
        if isinstance(w["value"], dict):
            assert set(g["value"]) == set(w["value"])
            assert all(close(g["value"][k], v) for k, v in w["value"].items())
        else:
            assert close(g["value"], w["value"])


@pytest.mark.parametrize(
    "vec", load("ble.json")["bthome_v2"]["vectors"], ids=lambda v: v["service_data"]
)
def test_bthome_vectors(capsys: pytest.CaptureFixture[str], vec: dict[str, Any]) -> None:
    """Each BTHome v2 vector, plain or encrypted with its bind key, gives the published values."""
    args = ["bthome", vec["service_data"]]
    if "bind_key" in vec:
        args += ["--bindkey", vec["bind_key"], "--mac", vec["mac"]]
    code, got, err = run(capsys, *args)
    assert code == 0, err
    for key, value in vec["expect"].items():
        assert close(got[key], value), key
    if "expect_counter" in vec:
        assert got["counter"] == vec["expect_counter"]


def test_ruuvi_vector(capsys: pytest.CaptureFixture[str]) -> None:
    """The Ruuvi RAWv2 vector gives the published values."""
    (vec,) = load("ble.json")["ruuvi_rawv2"]["vectors"]
    code, got, err = run(capsys, "ruuvi", vec["manufacturer_data"])
    assert code == 0, err
    assert close(got["temperature"], vec["expect"]["temperature"])
    assert close(got["humidity"], vec["expect"]["humidity"])
    assert got["mac"] == vec["expect"]["mac"]
    assert got["sequence"] == vec["expect"]["sequence"]


def test_serial_vectors(capsys: pytest.CaptureFixture[str]) -> None:
    """The PMS5003 stream (garbage first), SDS011 frame and NMEA sentences decode as published."""
    serial = load("serial_sensors.json")
    (pms,) = serial["pms5003"]["vectors"]
    code, got, err = run(capsys, "pms5003", pms["stream_hex"])
    assert code == 0, err
    for key in ("pm1_0_cf1", "pm2_5_cf1", "pm10_cf1", "pm1_0_atm", "pm2_5_atm", "pm10_atm"):
        assert got[key] == pms["expect"][key]
    (sds,) = serial["sds011"]["vectors"]
    code, got, err = run(capsys, "sds011", sds["frame_hex"])
    assert code == 0, err
    assert close(got["pm2_5"], 123.6) and close(got["pm10"], 261.8)
    assert got["device_id"] == "60A1"
    gga, rmc = serial["nmea0183"]["vectors"]
    code, got, err = run(capsys, "nmea", gga)
    assert code == 0, err
    assert abs(got["lat"] - (48 + 7.038 / 60)) < 1e-6 and abs(got["lon"] - 11.5166667) < 1e-6
    code, got, err = run(capsys, "nmea", rmc)
    assert code == 0, err


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        ("pms5003", "424D001C00", "truncated"),
        ("sds011", "AAC0D4043A0AA1601EAB", "bad_checksum"),
        ("nmea", "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48", "checksum"),
        ("ruuvi", "0512FC", "bad_length"),
        ("cayenne", "0367", "truncated"),
        ("semtech-udp", "01", "too_short"),
    ],
)
def test_bad_input_exits_1_with_a_reason(
    capsys: pytest.CaptureFixture[str], kind: str, data: str, reason: str
) -> None:
    """Input that does not decode: exit 1 and a line naming why."""
    code, _, err = run(capsys, kind, data)
    assert code == 1
    assert "does not decode" in err and reason in err


def test_not_hex_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Input that is not hex is a usage error (exit 2), not a decode failure."""
    code, _, err = run(capsys, "ruuvi", "zz")
    assert code == 2 and "not hex" in err


def test_as_a_process() -> None:
    """The installed command decodes from the shell too."""
    out = subprocess.run(
        [sys.executable, "-m", "cityedge", "decode", "cayenne", "03670110056700FF"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["value"] == 27.2
