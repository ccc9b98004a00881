"""Device profile loading: every rule of docs/profiles.md, reported with file and line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityedge.config.profile_loader import (
    ProfileCache,
    available_profiles,
    check_profile,
    load_profile,
)
from cityedge.errors import ConfigError, Problem
from cityedge.profiles import AddressRange, FieldMap, WriteRange

HEAD = """\
[profile]
vendor = "Acme"
model = "M1"
family = "energy"
source = "Acme M1 register map v1"
"""  # 5 lines: the first [[points]] after it is on line 7 (one blank line between)


def point(name: str, register: str, address: int, kind: str, *extra: str) -> str:
    lines = [f'name = "{name}"', f'register = "{register}"', f"address = {address}"]
    lines += [f'type = "{kind}"', *extra]
    return "\n[[points]]\n" + "\n".join(lines) + "\n"


def write_profile(folder: Path, text: str, name: str = "acme/m1") -> Path:
    path = folder / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems(folder: Path, text: str) -> list[Problem]:
    write_profile(folder, text)
    profile, found = check_profile(folder, "acme/m1")
    assert profile is None and found
    return found


def only(folder: Path, text: str) -> tuple[int, str, str]:
    (problem,) = problems(folder, text)
    assert problem.file == str(folder / "acme/m1.toml")
    return problem.line, problem.path, problem.message


def test_valid_profile_loads_with_defaults(tmp_path: Path) -> None:
    """A valid profile becomes a Profile; omitted keys take the documented defaults."""
    text = HEAD + point("voltage", "input", 0, "float32", 'unit = "V"', "scale = 0.1")
    text += point("relay", "coil", 0, "bool", "write = { min = 0, max = 1 }")
    text += point("alarm", "holding", 10, "bitfield", "bits = [4, 7]", 'family = "public_safety"')
    text += point("label", "holding", 11, "string", "length = 8")
    text += "\n[[unreadable]]\nregister = 'holding'\nstart = 100\nend = 199\n"
    path = write_profile(tmp_path, text)
    profile = load_profile(tmp_path, "acme/m1")
    assert (profile.name, profile.vendor, profile.model) == ("acme/m1", "Acme", "M1")
    assert (profile.max_registers, profile.max_bits, profile.max_gap) == (125, 2000, 8)
    assert profile.firmware == ()
    assert profile.unreadable == (AddressRange("holding", 100, 199),)
    assert profile.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    voltage = profile.point("voltage")
    assert (voltage.order, voltage.scale, voltage.unit, voltage.family) == (
        "ABCD",
        0.1,
        "V",
        "energy",
    )
    assert profile.point("relay").write == WriteRange(0.0, 1.0)
    alarm = profile.point("alarm")
    assert (alarm.bits, alarm.family, alarm.order) == ((4, 7), "public_safety", "AB")
    assert (profile.point("label").length, profile.point("label").words) == (8, 8)


@pytest.mark.parametrize(
    ("byte_order", "kind", "expected"),
    [
        ("ABCD", "int16", "AB"),
        ("CDAB", "uint16", "AB"),
        ("BADC", "int16", "BA"),
        ("DCBA", "bitfield", "BA"),
        ("CDAB", "float32", "CDAB"),
        ("ABCD", "float64", "ABCDEFGH"),
        ("CDAB", "int64", "GHEFCDAB"),
        ("BADC", "uint64", "BADCFEHG"),
        ("DCBA", "float64", "HGFEDCBA"),
        ("BADC", "string", "BA"),
    ],
)
def test_point_order_defaults_to_byte_order_narrowed_to_width(
    tmp_path: Path, byte_order: str, kind: str, expected: str
) -> None:
    """Without `order`, a point takes the profile's byte_order fitted to its width."""
    extra = ["bits = [0, 3]"] if kind == "bitfield" else []
    extra += ["length = 2"] if kind == "string" else []
    text = HEAD + f'byte_order = "{byte_order}"\n' + point("p", "holding", 0, kind, *extra)
    write_profile(tmp_path, text)
    assert load_profile(tmp_path, "acme/m1").points[0].order == expected


# Each case: extra point text after HEAD; the expected (line, path, message start).
# The first added point starts on line 7 ([[points]]), its keys on lines 8-11.
CASES = {
    "unknown family": (
        point("p", "input", 0, "int16", 'family = "weather"'),
        (12, "points[0].family", "unsupported value"),
    ),
    "bad name": (point("Phase-1", "input", 0, "int16"), (8, "points[0].name", "has an invalid")),
    "bool on a holding register": (
        point("p", "holding", 0, "bool"),
        (11, "points[0].type", "bool is only for coil"),
    ),
    "number on a coil": (
        point("p", "coil", 0, "uint16"),
        (11, "points[0].type", "coils and discrete inputs hold bool only"),
    ),
    "order of the wrong width": (
        point("p", "input", 0, "int16", 'order = "CDAB"'),
        (12, "points[0].order", "not a 16-bit byte order"),
    ),
    "unknown order": (
        point("p", "input", 0, "float64", 'order = "ABCD"'),
        (12, "points[0].order", "not a 64-bit byte order"),
    ),
    "order on a coil": (
        point("p", "coil", 0, "bool", 'order = "AB"'),
        (12, "points[0].order", "does not apply to coil points"),
    ),
    "write on an input register": (
        point("p", "input", 0, "int16", "write = { min = 0, max = 10 }"),
        (12, "points[0].write", "only coil and holding points can be written"),
    ),
    "write min above max": (
        point("p", "holding", 0, "int16", "write = { min = 10, max = 0 }"),
        (12, "points[0].write.max", "must not be below min"),
    ),
    "string without length": (
        point("p", "holding", 0, "string"),
        (7, "points[0]", "missing required key 'length' for a string point"),
    ),
    "length on a number": (
        point("p", "holding", 0, "int16", "length = 2"),
        (12, "points[0].length", "only for string points"),
    ),
    "bitfield without bits": (
        point("p", "holding", 0, "bitfield"),
        (7, "points[0]", "missing required key 'bits' for a bitfield point"),
    ),
    "bits beyond 15": (
        point("p", "holding", 0, "bitfield", "bits = [0, 16]"),
        (12, "points[0].bits[1]", "out of range"),
    ),
    "bits reversed": (
        point("p", "holding", 0, "bitfield", "bits = [9, 2]"),
        (12, "points[0].bits", "low bit must not exceed high bit"),
    ),
    "bits not a pair": (
        point("p", "holding", 0, "bitfield", "bits = [1]"),
        (12, "points[0].bits", "wrong number of items"),
    ),
    "address too large": (
        point("p", "input", 65536, "int16"),
        (10, "points[0].address", "out of range"),
    ),
    "point runs past the address space": (
        point("p", "input", 65534, "float64"),
        (10, "points[0].address", "the point spans 4 registers and runs past"),
    ),
    "bool typed as int": (
        point("p", "input", 0, "int16", "scale = true"),
        (12, "points[0].scale", "must be a number"),
    ),
    "unknown key": (
        point("p", "input", 0, "int16", 'units = "V"'),
        (12, "points[0].units", "unknown key, did you mean 'unit'?"),
    ),
    "scale of zero": (
        point("p", "input", 0, "int16", "scale = 0"),
        (12, "points[0].scale", "0 would turn every value into 0"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_is_reported_at_its_line(tmp_path: Path, case: str) -> None:
    """Each documented rule, broken alone, gives one problem at the right line and field."""
    extra, expected = CASES[case]
    line, path, message = only(tmp_path, HEAD + extra)
    assert (line, path) == expected[:2]
    assert message.startswith(expected[2]), message


def test_overlapping_points_are_errors(tmp_path: Path) -> None:
    """Points of one register type may not share addresses; other types may."""
    text = HEAD + point("a", "input", 0, "float32") + point("b", "input", 1, "int16")
    text += point("c", "holding", 1, "int16")
    assert only(tmp_path, text) == (13, "points[1]", "overlaps point 'a' (line 7)")


def test_bitfields_may_share_a_register(tmp_path: Path) -> None:
    """Two bitfields of the same register do not overlap; a bitfield and an int16 do."""
    text = HEAD + point("lo", "holding", 3, "bitfield", "bits = [0, 3]")
    text += point("hi", "holding", 3, "bitfield", "bits = [4, 7]")
    write_profile(tmp_path, text)
    assert len(load_profile(tmp_path, "acme/m1").points) == 2
    text += point("whole", "holding", 3, "uint16")
    assert only(tmp_path, text) == (21, "points[2]", "overlaps point 'lo' (line 7)")


def test_points_in_unreadable_ranges_are_errors(tmp_path: Path) -> None:
    """A point that touches an unreadable range of its register type is rejected."""
    text = HEAD + "\n[[unreadable]]\nregister = 'input'\nstart = 10\nend = 19\n"
    text += point("ok", "holding", 10, "int16") + point("bad", "input", 8, "float64")
    assert only(tmp_path, text) == (18, "points[1]", "lies in the unreadable range input 10..19")


def test_duplicate_point_names_are_errors(tmp_path: Path) -> None:
    """Point names are unique within a profile; the second names the first's line."""
    text = HEAD + point("p", "input", 0, "int16") + point("p", "input", 1, "int16")
    assert only(tmp_path, text) == (14, "points[1].name", "duplicate point name (first at line 7)")


def test_duplicate_names_are_found_beside_other_mistakes_of_the_points(tmp_path: Path) -> None:
    """A duplicate name is reported in the same pass as a bad type on the first point."""
    text = HEAD + point("p", "input", 0, "float33") + point("p", "input", 1, "int16")
    found = [(p.line, p.path) for p in problems(tmp_path, text)]
    assert found == [(11, "points[0].type"), (14, "points[1].name")]


def test_a_scale_of_zero_says_what_is_allowed(tmp_path: Path) -> None:
    """scale = 0 would publish 0 for every value: rejected, with the allowed values and got."""
    (problem,) = problems(tmp_path, HEAD + point("p", "input", 0, "int16", "scale = 0"))
    assert (problem.allowed, problem.got) == ("any number except 0", 0)


def test_alert_levels_out_of_order_show_what_was_given(tmp_path: Path) -> None:
    """Levels that do not get worse from blue to red: the rule and the levels given."""
    alert = "alert = { above = { blue = 75, yellow = 50, red = 25 } }"
    (problem,) = problems(tmp_path, HEAD + point("p", "input", 0, "int16", alert))
    assert (problem.line, problem.path) == (12, "points[0].alert.above")
    assert problem.message == "levels must get worse from blue to red"
    assert problem.allowed == "blue <= yellow <= red, for an alert above them"
    assert problem.got == {"blue": 75.0, "yellow": 50.0, "red": 25.0}
    below = alert.replace("above", "below").replace("75", "5")
    (problem,) = problems(tmp_path, HEAD + point("p", "input", 0, "int16", below))
    assert problem.allowed == "blue >= yellow >= red, for an alert below them"
    assert problem.got == {"blue": 5.0, "yellow": 50.0, "red": 25.0}


GENERIC = """\
[profile]
vendor = "Acme"
model = "T1"
family = "environment"
protocol = "serial"
codec = "generic"
source = "Acme T1 manual"
byte_order = "ABCD"

[codec]
kind = "line"
regex = 'T=(?P<temperature>-?[0-9.]+) RH=(?P<humidity>[0-9.]+)'
fields = [{name = "temperature"}, {name = "humidity"}]

[[fields]]
key = "temperature"
name = "temperature"

[[fields]]
key = "humidty"
name = "humidity"
"""


def test_a_generic_codec_field_must_map_a_value_it_yields(tmp_path: Path) -> None:
    """A [[fields]] key the generic codec never yields: named with a did-you-mean and the keys."""
    found = problems(tmp_path, GENERIC)
    assert [(p.line, p.path) for p in found] == [(8, "profile.byte_order"), (20, "fields[1].key")]
    key = found[1]
    assert key.message == "the generic codec yields no such value, did you mean 'humidity'?"
    assert (key.allowed, key.got) == ("temperature, humidity", "humidty")
    fixed = GENERIC.replace('key = "humidty"', 'key = "humidity"').replace(
        'byte_order = "ABCD"\n', ""
    )
    write_profile(tmp_path, fixed)
    assert [f.key for f in load_profile(tmp_path, "acme/m1").fields] == ["temperature", "humidity"]


def test_profile_table_rules(tmp_path: Path) -> None:
    """[profile] requires vendor/model/family/source and bounds max_registers and friends."""
    text = '[profile]\nvendor = "Acme"\nmax_registers = 200\nbyte_order = "ABCDEFGH"\n'
    text += point("p", "input", 0, "int16")
    found = [(p.line, p.path, p.message) for p in problems(tmp_path, text)]
    assert found == [
        (1, "profile", "missing required key 'model'"),
        (1, "profile", "missing required key 'family'"),
        (1, "profile", "missing required key 'source'"),
        (3, "profile.max_registers", "out of range"),
        (4, "profile.byte_order", "unsupported value"),
    ]


def test_string_longer_than_one_read_is_an_error(tmp_path: Path) -> None:
    """A point wider than max_registers could never be read in one request."""
    text = HEAD + "max_registers = 4\n" + point("s", "holding", 0, "string", "length = 5")
    assert only(tmp_path, text)[:2] == (13, "points[0].length")


def test_every_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    """Several broken points give one problem each, sorted by line."""
    text = HEAD + point("a", "coil", 0, "int16") + point("B", "input", 0, "float32")
    text += point("c", "input", 1, "int16", 'order = "ABCD"')
    found = problems(tmp_path, text)
    assert [p.line for p in found] == [11, 14, 19, 24]
    assert all(str(p).startswith(f"{tmp_path / 'acme/m1.toml'}:") for p in found)


def test_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    """A TOML syntax error gives its line; a missing profile or a bad name is one problem."""
    assert only(tmp_path, HEAD + "[[points]\n")[:2] == (6, "(syntax)")
    (missing,) = check_profile(tmp_path, "acme/none")[1]
    assert "cannot read profile" in missing.message
    (bad,) = check_profile(tmp_path, "../etc/passwd")[1]
    assert bad.message == "invalid profile name"
    with pytest.raises(ConfigError):
        load_profile(tmp_path, "acme/none")


def test_cache_reads_each_profile_once(tmp_path: Path) -> None:
    """Within one load a profile named by many devices is read and validated once."""
    path = write_profile(tmp_path, HEAD + point("p", "input", 0, "int16"))
    cache = ProfileCache()
    first, _ = cache.check(tmp_path, "acme/m1")
    path.write_text("broken =", encoding="utf-8")
    second, _ = cache.check(tmp_path, "acme/m1")
    assert first is not None and second is first
    assert available_profiles(tmp_path) == ["acme/m1"]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_profile_text_never_crashes(text: str) -> None:
    """Any text as a profile yields a Profile or problems, never an exception."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "x").mkdir()
        (Path(folder) / "x/y.toml").write_text(HEAD + text, encoding="utf-8", errors="replace")
        profile, found = check_profile(Path(folder), "x/y")
        assert (profile is None) == bool(found)


def test_a_field_scales_numbers_and_leaves_other_values_as_they_are() -> None:
    """FieldMap.engineering: raw * scale + offset for numbers only (BLE and serial fields)."""
    f = FieldMap(key="t", name="temperature", scale=0.1, offset=-40.0)
    assert f.engineering(2301) == 190.1  # 12 significant digits, not 190.10000000000002
    assert f.engineering(True) is True and f.engineering(None) is None
    assert f.engineering("ok") == "ok"
    same = FieldMap(key="n", name="count")
    assert same.engineering(7) == 7 and isinstance(same.engineering(7), int)


def alert_point(alert: str) -> str:
    """HEAD and one point (line 7) whose alert is on line 12."""
    return HEAD + point("p", "input", 0, "int16", f"alert = {{ {alert} }}")


@pytest.mark.parametrize(
    ("alert", "got"),
    [
        ("hysteresis = 5", ["hysteresis"]),
        ("above = { blue = 5 }, below = { blue = 1 }", ["above", "below"]),
    ],
)
def test_an_alert_names_both_directions_it_may_take(
    tmp_path: Path, alert: str, got: list[str]
) -> None:
    """Neither or both of above and below: the allowed forms name both, got lists the keys."""
    (problem,) = problems(tmp_path, alert_point(alert))
    assert (problem.line, problem.path) == (12, "points[0].alert")
    assert problem.message == "needs exactly one of above or below"
    assert problem.allowed == "above = {blue, yellow, red} or below = {blue, yellow, red}"
    assert problem.got == got


@pytest.mark.parametrize(
    ("levels", "path", "message"),
    [
        ("{ bleu = 25 }", "points[0].alert.above.bleu", "unknown key, did you mean 'blue'?"),
        ("{ blue = nan }", "points[0].alert.above.blue", "must be a finite number"),
        ("{ blue = 25, red = inf }", "points[0].alert.above.red", "must be a finite number"),
        ("5", "points[0].alert.above", "must be a table"),
    ],
)
def test_a_bad_level_table_is_the_only_problem_of_its_alert(
    tmp_path: Path, levels: str, path: str, message: str
) -> None:
    """A misspelt or non-finite level is reported alone, not also as 'needs at least one level'."""
    (problem,) = problems(tmp_path, alert_point(f"above = {levels}"))
    assert (problem.path, problem.message) == (path, message)


def test_an_empty_level_table_needs_a_level(tmp_path: Path) -> None:
    """above = {} names the levels it may hold."""
    (problem,) = problems(tmp_path, alert_point("above = {}"))
    assert (problem.path, problem.message) == ("points[0].alert.above", "needs at least one level")
    assert (problem.allowed, problem.got) == ("blue, yellow, red", {})


@pytest.mark.parametrize(
    ("alert", "clear_below", "lowest"),
    [
        ("above = { blue = 25 }, hysteresis = 100", -75, "blue = 25"),
        ("above = { blue = 25, red = 75 }, hysteresis = 25", 0, "blue = 25"),
        ("above = { yellow = 10, red = 20 }, hysteresis = 12.5", -2.5, "yellow = 10"),
    ],
)
def test_a_hysteresis_reaching_past_zero_is_refused(
    tmp_path: Path, alert: str, clear_below: float, lowest: str
) -> None:
    """Above positive levels, a reading of 0 must clear the alert: hysteresis < lowest level."""
    (problem,) = problems(tmp_path, alert_point(alert))
    assert (problem.line, problem.path) == (12, "points[0].alert.hysteresis")
    assert problem.message.startswith(f"too large: the alert would clear only below {clear_below}")
    assert problem.allowed == f"less than the lowest level ({lowest})"


@pytest.mark.parametrize(
    "alert",
    [
        "above = { blue = 25 }, hysteresis = 24.9",  # clears below 0.1
        "above = { blue = -18 }, hysteresis = 30",  # a freezer: its values are negative anyway
        "above = { blue = 0 }, hysteresis = 5",  # 0 itself raises: no floor to judge by
        "below = { blue = 5 }, hysteresis = 30",  # below: no common ceiling to reach past
    ],
)
def test_a_hysteresis_is_only_refused_past_the_floor_of_zero(tmp_path: Path, alert: str) -> None:
    """A hysteresis that leaves 0 clearing the alert, or that zero does not bound, loads."""
    write_profile(tmp_path, alert_point(alert))
    assert load_profile(tmp_path, "acme/m1").point("p").alert is not None


PUSH = """\
[profile]
vendor = "Acme"
model = "T1"
family = "environment"
protocol = "{protocol}"
{codec}source = "Acme T1 manual"

[[fields]]
key = "{key}"
name = "p"
{extra}"""


def push(protocol: str, codec: str | None, key: str = "x", extra: str = "") -> str:
    """A one-field profile: codec on line 6, [[fields]] on 9, its key on 10, ``extra`` on 12."""
    return PUSH.format(
        protocol=protocol,
        codec=f'codec = "{codec}"\n' if codec is not None else "",
        key=key,
        extra=extra,
    )


@pytest.mark.parametrize(
    ("protocol", "codec", "hint", "allowed"),
    [
        ("serial", "pms5030", "pms5003", "pms5003, sds011, nmea, generic"),
        ("serial", "nmea0183", "nmea", "pms5003, sds011, nmea, generic"),
        ("lorawan", "cayene", "cayenne", "cayenne, dragino-ldds75, dragino-lht65, elsys"),
        ("ble", "ruvi", "ruuvi", "bthome, ruuvi"),
    ],
)
def test_a_misspelt_codec_gets_a_did_you_mean_in_every_family(
    tmp_path: Path, protocol: str, codec: str, hint: str, allowed: str
) -> None:
    """Serial, LoRaWAN and BLE profiles: a codec typo names the closest codec and all of them."""
    (problem,) = problems(tmp_path, push(protocol, codec))
    assert (problem.line, problem.path) == (6, "profile.codec")
    assert problem.message == f"not a {protocol} codec, did you mean {hint!r}?"
    assert (problem.allowed, problem.got) == (allowed, codec)


def test_a_missing_or_non_text_codec_is_one_problem(tmp_path: Path) -> None:
    """No codec: missing, with the codecs; codec = 5: only 'must be a string'."""
    (missing,) = problems(tmp_path, push("serial", None))
    assert (missing.path, missing.message) == (
        "profile",
        "missing required key 'codec' for a serial profile",
    )
    assert missing.allowed == "pms5003, sds011, nmea, generic"
    (number,) = problems(tmp_path, push("serial", "x").replace('"x"', "5", 1))
    assert (number.path, number.message) == ("profile.codec", "must be a string")


@pytest.mark.parametrize(
    ("protocol", "codec", "extra", "path", "message"),
    [
        ("serial", "sds011", "sampling_interval_ms = 100", "fields[0].sampling_interval_ms",
         "only for opcua profiles, not serial ones"),
        ("ble", "ruuvi", 'register = "input"', "fields[0].register",
         "only for modbus profiles, not ble ones"),
    ],
)  # fmt: skip
def test_a_field_key_of_another_protocol_says_where_it_belongs(
    tmp_path: Path, protocol: str, codec: str, extra: str, path: str, message: str
) -> None:
    """An OPC UA or Modbus key in a serial or BLE field: whose it is, and the keys fields take."""
    key = "pm10" if codec == "sds011" else "temperature"
    (problem,) = problems(tmp_path, push(protocol, codec, key, extra + "\n"))
    assert (problem.line, problem.path, problem.message) == (12, path, message)
    assert problem.allowed == (
        "key, name, unit, family, scale, offset, write, description, model, alert"
    )


def test_a_point_key_of_another_protocol_says_where_it_belongs(tmp_path: Path) -> None:
    """A modbus point with an OPC UA or [[fields]] key: whose it is, and the point keys."""
    text = HEAD + point("p", "input", 0, "int16", "deadband = 1", 'key = "x"')
    found = [(p.line, p.path, p.message) for p in problems(tmp_path, text)]
    assert found == [
        (12, "points[0].deadband", "only for opcua profiles, not modbus ones"),
        (13, "points[0].key", "only for opcua, serial, lorawan or ble profiles, not modbus ones"),
    ]
    assert str(problems(tmp_path, text)[0].allowed).startswith("name, register, address, type")


@pytest.mark.parametrize(
    ("codec", "key", "hint"),
    [
        ("pms5003", "pm25_atm", "pm2_5_atm"),
        ("pms5003", "counts.6", "counts.5"),
        ("sds011", "pm2.5", "pm2_5"),
        ("nmea", "altitude", "altitude_m"),
    ],
)
def test_a_builtin_serial_codec_field_must_map_a_value_it_yields(
    tmp_path: Path, codec: str, key: str, hint: str
) -> None:
    """A [[fields]] key a built-in serial codec never yields: a did-you-mean and all its keys."""
    from cityedge.drivers.serial.codecs import BUILTIN

    (problem,) = problems(tmp_path, push("serial", codec, key))
    assert (problem.line, problem.path) == (10, "fields[0].key")
    assert problem.message == f"the {codec} codec yields no such value, did you mean {hint!r}?"
    assert (problem.allowed, problem.got) == (", ".join(sorted(BUILTIN[codec].keys)), key)


def test_shipped_serial_profiles_map_only_keys_their_codec_yields() -> None:
    """The shipped PMS5003, SDS011 and NEO-6M profiles load under the codecs' key check."""
    from cityedge.drivers.serial.codecs import BUILTIN

    shipped = Path(__file__).resolve().parents[1] / "firmware-profiles"
    for name in ("plantower/pms5003", "nova/sds011", "u-blox/neo-6m"):
        profile = load_profile(shipped, name)
        assert {f.key for f in profile.fields} <= BUILTIN[profile.codec].keys, name
