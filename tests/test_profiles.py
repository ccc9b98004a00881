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
