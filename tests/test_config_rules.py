"""Config rules across keys and devices: LoRaWAN identities, OPC UA security, serial
ports and anomaly model names, each reported once, at its line, with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityedge.config.checks import a_or_an
from cityedge.config.loader import check_config, load_config, shipped_profiles_dir
from cityedge.errors import Problem

REPO = Path(__file__).resolve().parents[1]
SITE = '[site]\nid = "s"\ngateway_id = "g"\nlatitude = 1.0\nlongitude = 2.0\n'
KEY_A = "00112233445566778899aabbccddeeff"
KEY_B = "ffeeddccbbaa99887766554433221100"


def check(folder: Path, text: str) -> list[Problem]:
    """The problems of ``text`` as a config in ``folder``, using the shipped profiles."""
    cfg = folder / "gw.toml"
    cfg.write_text(f'profiles_dir = "{REPO / "firmware-profiles"}"\n' + text)
    return check_config(cfg)[1]


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """The config line (after the profiles_dir line) of the nth line containing ``needle``."""
    lines = [n for n, line in enumerate(text.splitlines(), start=2) if needle in line]
    return lines[nth]


def lora_device(dev_id: str, **keys: str) -> str:
    body = "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    return f'[[devices]]\nid = "{dev_id}"\nbus = "lora"\nprofile = "dragino/lht65"\n{body}'


LORA = SITE + '[buses.lora]\ntype = "lorawan-udp"\n'


def abp(dev_eui: str, dev_addr: str, nwk_s_key: str = KEY_A) -> dict[str, str]:
    return {"dev_eui": dev_eui, "dev_addr": dev_addr, "nwk_s_key": nwk_s_key, "app_s_key": KEY_A}


def test_the_same_dev_eui_written_differently_is_a_duplicate(tmp_path: Path) -> None:
    """One DevEUI on two devices (other case, colons): an error at the second, naming the first."""
    text = LORA + lora_device("a", **abp("70B3D57ED0000001", "26011111"))
    text += lora_device("b", **abp("70:b3:d5:7e:d0:00:00:01", "26011112"))
    (problem,) = check(tmp_path, text)
    assert (problem.line, problem.path) == (line_of(text, "70:b3"), "devices[1].dev_eui")
    first = line_of(text, "[[devices]]")
    assert problem.message == f"same DevEUI as device 'a' at line {first}"
    assert problem.got == "70b3d57ed0000001" and "no other device" in str(problem.allowed)


def test_a_dev_eui_is_unique_across_lorawan_buses(tmp_path: Path) -> None:
    """A DevEUI names one radio: a ChirpStack device may not repeat a local one's."""
    text = LORA + '[buses.city]\ntype = "chirpstack-mqtt"\n'
    text += lora_device("a", dev_eui="70B3D57ED0000001", activation="otaa", app_key=KEY_A)
    text += '[[devices]]\nid = "b"\nbus = "city"\nprofile = "dragino/lht65"\n'
    text += 'dev_eui = "70 B3 D5 7E D0 00 00 01"\n'
    assert [(p.line, p.path) for p in check(tmp_path, text)] == [
        (line_of(text, "70 B3"), "devices[1].dev_eui")
    ]


def test_abp_devices_may_share_a_dev_addr_but_not_with_the_same_key(tmp_path: Path) -> None:
    """Same DevAddr and NwkSKey: the second is an error; another NwkSKey tells them apart."""
    text = LORA + lora_device("a", **abp("70B3D57ED0000001", "26011111"))
    text += lora_device("b", **abp("70B3D57ED0000002", "26 01 11 11"))
    (problem,) = check(tmp_path, text)
    assert (problem.line, problem.path) == (line_of(text, "26 01 11 11"), "devices[1].dev_addr")
    assert problem.message.startswith("same dev_addr and nwk_s_key as device 'a' at line ")
    assert problem.got == "26011111"
    other_key = text.replace(f'nwk_s_key = "{KEY_A}"', f'nwk_s_key = "{KEY_B}"', 1)
    assert check(tmp_path, other_key) == []


def test_an_invalid_activation_is_the_only_problem(tmp_path: Path) -> None:
    """activation = "OTAA": one error at activation, no guesses about ABP keys it lacks."""
    text = LORA + lora_device("a", dev_eui="70B3D57ED0000001", activation="OTAA", app_key=KEY_A)
    (problem,) = check(tmp_path, text)
    assert (problem.path, problem.got, problem.allowed) == (
        "devices[0].activation",
        "OTAA",
        "abp, otaa",
    )


OPCUA = SITE + '[buses.plc]\ntype = "opcua"\nendpoint = "opc.tcp://127.0.0.1:4840"\n'


def test_opcua_security_mode_follows_the_policy_when_left_out(tmp_path: Path) -> None:
    """Basic256Sha256 without security_mode is valid, and the source then signs and encrypts."""
    from cityedge.drivers.opcua.client import Settings

    (tmp_path / "server.der").write_bytes(b"x")
    text = OPCUA + 'security_policy = "Basic256Sha256"\ntrust = ["server.der"]\n'
    (tmp_path / "gw.toml").write_text(text)
    bus = load_config(tmp_path / "gw.toml").buses["plc"]
    settings = Settings.from_options(
        bus.options["endpoint"], bus.options, state_dir=tmp_path, timeout_s=1.0
    )
    assert (settings.policy, settings.mode) == ("Basic256Sha256", "SignAndEncrypt")
    (problem,) = check(tmp_path, text + 'security_mode = "None"\n')
    assert (problem.path, problem.got) == ("buses.plc.security_mode", "None")


def test_opcua_rules_skip_what_depends_on_a_bad_key(tmp_path: Path) -> None:
    """A misspelt policy is reported once: no mode, trust or key-pair problem made up from it."""
    (tmp_path / "server.der").write_bytes(b"x")
    text = OPCUA + 'security_policy = "basic256sha256"\nsecurity_mode = "Sign"\n'
    text += 'certificate = "missing.der"\nprivate_key = "missing.pem"\n'
    found = {(p.path, p.message.split(":")[0]) for p in check(tmp_path, text)}
    assert found == {
        ("buses.plc.security_policy", "unsupported value"),
        ("buses.plc.certificate", "no such file"),
        ("buses.plc.private_key", "no such file"),
    }


@pytest.mark.parametrize("device", ["ttyUSB1", "dev/ttyUSB1"])
@pytest.mark.parametrize("bus_type", ["serial-sensor", "modbus-rtu"])
def test_serial_device_paths_are_checked_on_every_serial_bus(
    tmp_path: Path, device: str, bus_type: str
) -> None:
    """A serial-sensor bus's device must be a device path, as a modbus-rtu bus's must."""
    text = SITE + f'[buses.aq]\ntype = "{bus_type}"\ndevice = "{device}"\n'
    (problem,) = check(tmp_path, text)
    assert (problem.line, problem.path, problem.message) == (
        9,
        "buses.aq.device",
        "not a serial port",
    )
    assert problem.got == device and "/dev/ttyUSB0" in str(problem.allowed)


MODEL_PROFILE = """\
[profile]
vendor = "Acme"
model = "M1"
family = "energy"
source = "Acme M1 register map v1"

[[points]]
name = "current"
register = "input"
address = 0
type = "float32"
model = "{model}"
"""


def model_config(folder: Path, point_model: str, watch_model: str) -> Path:
    """A config whose profile point and [anomaly] watch name models; one shipped model, `ours`."""
    profile = folder / "profiles/acme/m1.toml"
    profile.parent.mkdir(parents=True)
    profile.write_text(MODEL_PROFILE.format(model=point_model))
    (folder / "models/ours").mkdir(parents=True)
    (folder / "models/ours/ours.onnx").write_bytes(b"")
    cfg = folder / "gw.toml"
    cfg.write_text(
        'profiles_dir = "profiles"\n' + SITE + '[storage]\npath = "state/outbox.sqlite"\n'
        '[buses.tcp]\ntype = "modbus-tcp"\n'
        '[[devices]]\nid = "m1"\nbus = "tcp"\nunit_id = 1\nprofile = "acme/m1"\n'
        f'[anomaly]\nmodel_dir = "models"\nwatch = [\n  {{device = "m1", point = "current", '
        f'model = "{watch_model}"}},\n]\n'
    )
    return cfg


def test_unknown_anomaly_models_are_named_with_the_installed_ones(tmp_path: Path) -> None:
    """A profile point's or a watch entry's model that is not installed: an error at its line."""
    cfg = model_config(tmp_path, "ourz", "no_such_model")
    found = {(p.file, p.line, p.path): p for p in check_config(cfg)[1]}
    profile = str(tmp_path / "profiles/acme/m1.toml")
    assert set(found) == {
        (profile, 12, "points[0].model"),
        (str(cfg), 19, "anomaly.watch[0].model"),
    }
    typo = found[(profile, 12, "points[0].model")]
    assert typo.message == "unknown anomaly model, did you mean 'ours'?" and typo.got == "ourz"
    allowed = str(found[(str(cfg), 19, "anomaly.watch[0].model")].allowed)
    assert allowed.startswith(f"ours, from {tmp_path / 'state/models'} or {tmp_path / 'models'}")
    assert "install_model" in allowed


def test_a_model_installed_by_update_counts(tmp_path: Path) -> None:
    """A model in <state_dir>/models (the install_model command's folder) is one the agent loads."""
    cfg = model_config(tmp_path, "ours", "fresh")
    (tmp_path / "state/models/fresh").mkdir(parents=True)
    (tmp_path / "state/models/fresh/fresh.onnx").write_bytes(b"")
    config = load_config(cfg)
    assert config.anomaly.watch[0].model == "fresh"


def test_model_names_follow_the_model_folder_rule(tmp_path: Path) -> None:
    """A model name the install_model command could never create is a format error."""
    cfg = model_config(tmp_path, "Ours", "ours")
    (problem,) = check_config(cfg)[1]
    assert (problem.path, problem.message) == ("points[0].model", "has an invalid format")


def test_a_profile_hidden_by_a_local_profiles_folder_says_so(tmp_path: Path) -> None:
    """firmware-profiles/ next to the config hides the shipped ones: the error says where it is."""
    (tmp_path / "firmware-profiles/acme").mkdir(parents=True)
    (tmp_path / "firmware-profiles/acme/m1.toml").write_text(MODEL_PROFILE.format(model="x"))
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        SITE + '[buses.tcp]\ntype = "modbus-tcp"\n'
        '[[devices]]\nid = "m1"\nbus = "tcp"\nunit_id = 1\nprofile = "eastron/sdm630"\n'
    )
    (problem,) = check_config(cfg)[1]
    assert problem.path == "devices[0].profile"
    assert problem.message.startswith(f"unknown profile: no file {tmp_path / 'firmware-profiles'}")
    assert f"the shipped {shipped_profiles_dir()} has it" in problem.message
    assert problem.allowed == "acme/m1"


def test_a_key_of_another_bus_type_lists_the_keys_this_one_takes(tmp_path: Path) -> None:
    """sensor_mode on a Modbus TCP device: whose key it is, and what the device takes instead."""
    text = SITE + '[buses.tcp]\ntype = "modbus-tcp"\n'
    text += '[[devices]]\nid = "m"\nbus = "tcp"\nunit_id = 1\nprofile = "eastron/sdm630"\n'
    text += 'sensor_mode = "passive"\n'
    (problem,) = check(tmp_path, text)
    assert (problem.path, problem.message) == (
        "devices[0].sensor_mode",
        "only for devices on serial-sensor buses",
    )
    allowed = str(problem.allowed)
    assert allowed.startswith("id, bus, profile, ") and "unit_id" in allowed


@pytest.mark.parametrize(
    ("word", "expected"),
    [("opcua", "an opcua"), ("elsys", "an elsys"), ("int16", "an int16"), ("modbus", "a modbus"),
     ("serial-sensor", "a serial-sensor"), ("uint16", "a uint16"), ("ble", "a ble")],
)  # fmt: skip
def test_messages_name_identifiers_with_the_right_article(word: str, expected: str) -> None:
    """a_or_an, which messages naming a protocol, bus type or data type use."""
    assert a_or_an(word) == expected


def test_a_profile_of_another_protocol_names_the_bus_with_the_right_article(
    tmp_path: Path,
) -> None:
    """A Modbus profile on an OPC UA bus: "an opcua bus", allowed "an opcua profile"."""
    text = OPCUA + '[[devices]]\nid = "m"\nbus = "plc"\nprofile = "eastron/sdm630"\n'
    (problem,) = check(tmp_path, text)
    assert problem.message == "a modbus profile cannot run on an opcua bus"
    assert (problem.allowed, problem.got) == ("an opcua profile", "eastron/sdm630")
