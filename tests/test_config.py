"""The gateway config loader: positions, validation, defaults, paths, robustness."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityedge.config.loader import check_config, load_config, resolve_profiles_dir
from cityedge.config.model import StorageConfig, UplinkConfig
from cityedge.config.toml_lines import Key, format_key, key_lines
from cityedge.errors import ConfigError, Problem

PROFILE = """\
[profile]
vendor = "Acme"
model = "M1"
family = "energy"
source = "Acme M1 register map v1"

[[points]]
name = "voltage"
register = "input"
address = 0
type = "float32"
unit = "V"
"""

SITE = """\
[site]
id = "delft-1"
gateway_id = "gw-0042"
latitude = 52.01
longitude = 4.36
"""

# Each line below states where a problem is; the test asserts those numbers.
BAD = """\
[site]
id = "delft-1"
gateway_id = "gw-0042"
latitude = 52.01
longitude = 4.36

[buses.rs485]
type = "modbus-rtu"
device = "/dev/ttyUSB0"
baudrat = 9600
parity = "E"

[buses.plc]
type = "modbus-tcp"
host = "10.0.0.7"

[buses.slow]
type = "modbus-rtu"
device = "/dev/ttyUSB1"
baudrate = 9601

[[devices]]
id = "meter-1"
bus = "rs458"
unit_id = 1
profile = "acme/m1"

[[devices]]
id = "meter-2"
bus = "plc"
unit_id = "3"
profile = "acme/m9"
"""
# line 10: typo, line 20: baud rate, line 24: unknown bus,
# line 31: unit_id is a string, line 32: unknown profile


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with firmware-profiles/acme/m1.toml next to where configs go."""
    write(tmp_path, "firmware-profiles/acme/m1.toml", PROFILE)
    return tmp_path


def problems_of(path: Path) -> list[Problem]:
    config, problems = check_config(path)
    assert config is None
    return problems


def test_several_mistakes_each_reported_at_their_line(site: Path) -> None:
    """Every mistake in one file is reported at once, at its exact line and field."""
    problems = problems_of(write(site, "gw.toml", BAD))
    found = {(p.line, p.path): p.message for p in problems}
    assert set(found) == {
        (10, "buses.rs485.baudrat"),
        (20, "buses.slow.baudrate"),
        (24, "devices[0].bus"),
        (31, "devices[1].unit_id"),
        (32, "devices[1].profile"),
    }
    assert "did you mean 'baudrate'?" in found[(10, "buses.rs485.baudrat")]
    assert "did you mean 'rs485'?" in found[(24, "devices[0].bus")]
    assert found[(31, "devices[1].unit_id")] == "must be an integer"
    assert "unknown profile" in found[(32, "devices[1].profile")]
    assert [p.line for p in problems] == sorted(p.line for p in problems)


def test_every_problem_is_in_the_documented_format(site: Path) -> None:
    """Each problem prints as FILE:LINE: field.path: what is wrong (allowed: ...; got: ...)."""
    path = write(site, "gw.toml", BAD)
    shape = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<path>\S+): (?P<msg>[^()]+?)( \(.+\))?$")
    for problem in problems_of(path):
        match = shape.match(str(problem))
        assert match, str(problem)
        assert match["file"] == str(path)
        assert int(match["line"]) == problem.line
    baud = next(p for p in problems_of(path) if p.path == "buses.slow.baudrate")
    expected = f"{path}:20: buses.slow.baudrate: unsupported value (allowed: 1200, 2400,"
    assert str(baud).startswith(expected)
    assert str(baud).endswith("115200; got: 9601)")


def test_load_config_raises_config_error_carrying_every_problem(site: Path) -> None:
    """load_config raises ConfigError carrying check_config's problems, one per line."""
    path = write(site, "gw.toml", BAD)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.problems) == 5
    assert str(caught.value).count("\n") == 4


def test_valid_config_loads_with_defaults(site: Path) -> None:
    """A minimal valid config fills every omitted key from the model's defaults."""
    text = SITE + (
        '[buses.rs485]\ntype = "modbus-rtu"\ndevice = "/dev/ttyUSB0"\n\n'
        '[[devices]]\nid = "m1"\nbus = "rs485"\nunit_id = 7\nprofile = "acme/m1"\n'
    )
    config = load_config(write(site, "gw.toml", text))
    assert config.site.cell_size_m == 500
    bus = config.buses["rs485"]
    assert (bus.name, bus.baudrate, bus.parity, bus.stopbits, bus.bytesize) == (
        "rs485",
        9600,
        "N",
        1,
        8,
    )
    (device,) = config.devices
    assert (device.id, device.unit_id, device.profile_name) == ("m1", 7, "acme/m1")
    assert device.profile.points[0].name == "voltage"
    assert (device.poll_interval_s, device.timeout_s, device.retries) == (1.0, None, 2)
    assert (device.latitude, device.longitude, device.line) == (None, None, 10)
    assert config.uplink == UplinkConfig()
    assert config.storage == StorageConfig()
    assert config.log_level == "info"
    assert config.profiles_dir == site / "firmware-profiles"
    assert config.source == site / "gw.toml"


def test_full_config_converts_every_section(site: Path) -> None:
    """Sizes, numbers, locations and TLS settings come out typed as the model says."""
    write(site, "certs/ca.pem", "ca")
    text = SITE + (
        'log_level = "debug"\n'  # a top-level key after [site] belongs to [site]
    )
    assert problems_of(write(site, "a.toml", text))[0].path == "site.log_level"
    text = (
        'log_level = "debug"\n' + SITE + '[buses.plc]\ntype = "modbus-tcp"\nhost = "10.1.2.3"\n'
        "port = 5020\nmax_in_flight = 4\ntimeout_s = 2\n\n"
        '[[devices]]\nid = "m1"\nbus = "plc"\nunit_id = 0\nprofile = "acme/m1"\n'
        "poll_interval_s = 5\nlocation = { latitude = 52.0, longitude = 4.0 }\n\n"
        '[uplink]\nbroker = "mqtt.example.org"\nport = 8883\nprotocol = "mqtt311"\n'
        'topic_prefix = "city/delft"\nbatch_max_bytes = "128KiB"\nbacklog_share = 0.25\n'
        '[uplink.tls]\nca_file = "certs/ca.pem"\n\n'
        '[storage]\nmax_bytes = "1GiB"\ndurability = "normal"\n'
    )
    config = load_config(write(site, "b.toml", text))
    assert config.log_level == "debug"
    assert config.buses["plc"].port == 5020 and config.buses["plc"].timeout_s == 2.0
    assert isinstance(config.buses["plc"].timeout_s, float)
    device = config.devices[0]
    assert (device.unit_id, device.latitude, device.longitude) == (0, 52.0, 4.0)
    assert config.uplink.batch_max_bytes == 128 * 1024
    assert config.uplink.tls is not None and config.uplink.tls.ca_file == site / "certs/ca.pem"
    assert config.storage.max_bytes == 2**30 and config.storage.durability == "normal"


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths (storage, TLS files, profiles_dir) are relative to the config, not the cwd."""
    conf = tmp_path / "etc"
    write(conf, "profiles/acme/m1.toml", PROFILE)
    write(conf, "tls/ca.pem", "ca")
    text = (
        'profiles_dir = "profiles"\n'
        + SITE
        + (
            '[buses.b]\ntype = "modbus-tcp"\n'
            '[[devices]]\nid = "m1"\nbus = "b"\nunit_id = 1\nprofile = "acme/m1"\n'
            '[uplink.tls]\nca_file = "tls/ca.pem"\n'
            '[storage]\npath = "data/outbox.sqlite"\nstate_dir = "../state"\n'
        )
    )
    path = write(conf, "gw.toml", text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../etc/gw.toml"))
    assert config.profiles_dir == conf / "profiles"
    assert config.storage.path == conf / "data/outbox.sqlite"
    assert config.storage.state_dir == tmp_path / "state"
    assert config.uplink.tls is not None and config.uplink.tls.ca_file == conf / "tls/ca.pem"
    assert config.source == path


def test_missing_required_keys_point_at_the_table_header(site: Path) -> None:
    """A missing required key is reported at the line of the table that lacks it."""
    text = '\n[site]\nid = "x"\n\n[[devices]]\nid = "m1"\n'
    problems = problems_of(write(site, "gw.toml", text))
    missing = {(p.line, p.path, p.message) for p in problems}
    assert (2, "site", "missing required key 'gateway_id'") in missing
    assert (2, "site", "missing required key 'latitude'") in missing
    assert (5, "devices[0]", "missing required key 'bus'") in missing
    assert (5, "devices[0]", "missing required key 'profile'") in missing


def test_missing_site_table_is_reported(site: Path) -> None:
    """A file without [site] names the missing table at line 1."""
    (problem,) = problems_of(write(site, "gw.toml", "# nothing yet\n"))
    assert (problem.line, problem.path) == (1, "(top level)")
    assert "'site'" in problem.message


def test_toml_syntax_error_reports_the_line_tomllib_gives(site: Path) -> None:
    """A syntax error becomes one problem at the line tomllib names."""
    text = SITE + '\n[buses.a]\ntype = "modbus-tcp"\nport = 50 2\n'
    (problem,) = problems_of(write(site, "gw.toml", text))
    assert problem.line == 9
    assert problem.message.startswith("invalid TOML: ")
    assert "line 9" not in problem.message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("port", "true", "must be an integer"),
        ("port", "502.0", "must be an integer"),
        ("port", '"502"', "must be an integer"),
        ("port", "70000", "out of range"),
        ("timeout_s", "true", "must be a number"),
        ("timeout_s", "0", "out of range"),
        ("timeout_s", "nan", "must be a finite number"),
        ("host", "42", "must be a string"),
        ("host", '"my host"', "has an invalid format"),
    ],
)
def test_wrong_types_and_ranges_are_errors(site: Path, key: str, value: str, message: str) -> None:
    """Bool is not an int, float is not an int, strings are not numbers, ranges are enforced."""
    text = SITE + f'[buses.b]\ntype = "modbus-tcp"\n{key} = {value}\n'
    (problem,) = problems_of(write(site, "gw.toml", text))
    assert (problem.line, problem.path, problem.message) == (8, f"buses.b.{key}", message)


def test_bus_keys_of_the_other_bus_type_are_named_as_such(site: Path) -> None:
    """A serial key on a TCP bus says which bus types take it, rather than just 'unknown'."""
    text = SITE + '[buses.b]\ntype = "modbus-tcp"\nbaudrate = 9600\n'
    (problem,) = problems_of(write(site, "gw.toml", text))
    assert (problem.line, problem.message) == (8, "only for modbus-rtu or serial-sensor buses")


def test_rtu_devices_need_unit_id_1_to_247(site: Path) -> None:
    """Unit 0 is broadcast on RTU (rejected) but a valid unit id on TCP."""
    text = SITE + (
        '[buses.s]\ntype = "modbus-rtu"\ndevice = "/dev/ttyS0"\n'
        '[buses.t]\ntype = "modbus-tcp"\n'
        '[[devices]]\nid = "a"\nbus = "t"\nunit_id = 0\nprofile = "acme/m1"\n'
        '[[devices]]\nid = "b"\nbus = "s"\nunit_id = 0\nprofile = "acme/m1"\n'
    )
    (problem,) = problems_of(write(site, "gw.toml", text))
    assert (problem.line, problem.path) == (19, "devices[1].unit_id")
    assert "broadcast" in str(problem) and "1..247 on modbus-rtu" in str(problem)
    # A wrong type on an RTU bus names the RTU range too (it said 0..247).
    typed = text.replace('bus = "s"\nunit_id = 0', 'bus = "s"\nunit_id = "2"')
    (problem,) = problems_of(write(site, "gw.toml", typed))
    assert "must be an integer (allowed: 1..247 on modbus-rtu buses" in str(problem)


def test_duplicate_device_ids_are_errors(site: Path) -> None:
    """Two devices with one id: the second is reported, naming the first's line."""
    device = '[[devices]]\nid = "a"\nbus = "t"\nunit_id = 1\nprofile = "acme/m1"\n'
    text = SITE + '[buses.t]\ntype = "modbus-tcp"\n' + device + device
    (problem,) = problems_of(write(site, "gw.toml", text))
    assert (problem.line, problem.path) == (14, "devices[1].id")
    assert "first at line 8" in problem.message


@pytest.mark.parametrize(
    ("prefix", "ok"),
    [("city/delft", True), ("city/+", False), ("#", False), ("/city", False), ("c//d", False)],
)
def test_topic_prefix_rules(site: Path, prefix: str, ok: bool) -> None:
    """topic_prefix has no wildcards, no leading/trailing slash and no empty level."""
    text = SITE + f'[uplink]\ntopic_prefix = "{prefix}"\n'
    _config, problems = check_config(write(site, "gw.toml", text))
    assert (problems == []) is ok


@pytest.mark.parametrize(
    ("value", "expected"),
    [('"256MiB"', 256 * 2**20), ('"1 GB"', 10**9), ('"64kib"', 65536), ("8192", 8192)],
)
def test_storage_max_bytes_accepts_sizes(site: Path, value: str, expected: int) -> None:
    """max_bytes takes plain bytes or a size string with a unit."""
    config = load_config(write(site, "gw.toml", SITE + f"[storage]\nmax_bytes = {value}\n"))
    assert config.storage.max_bytes == expected


def test_tls_files_must_exist(site: Path) -> None:
    """A TLS file that does not exist is reported with the path looked at."""
    text = SITE + '[uplink]\ntls = { ca_file = "ca.pem", insecure_skip_verify = 1 }\n'
    problems = problems_of(write(site, "gw.toml", text))
    assert [(p.line, p.path) for p in problems] == [
        (7, "uplink.tls.ca_file"),
        (7, "uplink.tls.insecure_skip_verify"),
    ]
    assert str(site / "ca.pem") in problems[0].message


def test_unknown_profile_lists_what_exists(site: Path) -> None:
    """An unknown profile without a close match lists the available ones."""
    text = SITE + (
        '[buses.t]\ntype = "modbus-tcp"\n'
        '[[devices]]\nid = "a"\nbus = "t"\nunit_id = 1\nprofile = "zzz/qqq"\n'
    )
    (problem,) = problems_of(write(site, "gw.toml", text))
    assert (problem.line, problem.allowed) == (12, "acme/m1")


def test_bad_profile_is_reported_once_with_its_own_file_and_line(site: Path) -> None:
    """Problems in a profile used by two devices appear once, in the profile's file."""
    write(site, "firmware-profiles/acme/bad.toml", PROFILE.replace('"float32"', '"float33"'))
    device = '[[devices]]\nid = "{}"\nbus = "t"\nunit_id = 1\nprofile = "acme/bad"\n'
    text = SITE + '[buses.t]\ntype = "modbus-tcp"\n' + device.format("a") + device.format("b")
    (problem,) = problems_of(write(site, "gw.toml", text))
    assert problem.file == str(site / "firmware-profiles/acme/bad.toml")
    assert (problem.line, problem.path) == (11, "points[0].type")


def test_profiles_dir_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Override, then profiles_dir key, then $CITYEDGE_PROFILES, then beside the config."""
    config = tmp_path / "gw.toml"
    monkeypatch.delenv("CITYEDGE_PROFILES", raising=False)
    beside = tmp_path / "firmware-profiles"
    beside.mkdir()
    assert resolve_profiles_dir(config) == beside
    monkeypatch.setenv("CITYEDGE_PROFILES", "/env/profiles")
    assert resolve_profiles_dir(config) == Path("/env/profiles")
    assert resolve_profiles_dir(config, Path("/key")) == Path("/key")
    assert resolve_profiles_dir(config, Path("/key"), Path("/flag")) == Path("/flag")


def test_unreadable_config_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """A missing file, a folder, or non-UTF-8 bytes give one problem each."""
    (tmp_path / "latin1.toml").write_bytes(b"# ok\n# caf\xe9\n")
    for path, line in ((tmp_path / "none.toml", 0), (tmp_path, 0), (tmp_path / "latin1.toml", 2)):
        config, problems = check_config(path)
        assert config is None and len(problems) == 1
        assert problems[0].line == line


def test_unknown_top_level_key_gets_a_suggestion(site: Path) -> None:
    """A misspelt section name is an unknown key with a close suggestion."""
    (problem,) = problems_of(write(site, "gw.toml", SITE + "[uplnk]\nport = 1\n"))
    assert (problem.line, problem.path) == (6, "uplnk")
    assert problem.message == "unknown key, did you mean 'uplink'?"


def test_shipped_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/gateway.toml loads against the repository's firmware-profiles."""
    monkeypatch.delenv("CITYEDGE_PROFILES", raising=False)
    root = Path(__file__).resolve().parent.parent
    config = load_config(root / "examples/gateway.toml", root / "firmware-profiles")
    assert [d.profile_name for d in config.devices] == [
        "eastron/sdm630",
        "xy/xy-md02",
        "epever/tracer",
    ]
    assert {b.type for b in config.buses.values()} == {"modbus-rtu", "modbus-tcp"}


# -- key positions ------------------------------------------------------------

POSITIONS = """\
# comment
top = 1
[a]
x = 1
"q.k" = 2
dotted.key.here = 3
[a.b]
arr = [
  1,
  { inline = "y" },
]
text = '''
many
lines'''
after = true
[[list]]
v = 1
[[list]]
v = { w = 1, z = [1, 2] }
[list.sub]
s = 1
[[list.items]]
i = "]"
[[list.items]]
i = "#"  # comment
"""


def test_key_lines_handle_every_kind_of_declaration() -> None:
    """Headers, dotted and quoted keys, arrays of tables, inline tables and multi-line values."""
    lines = key_lines(POSITIONS)
    expected: dict[Key, int] = {
        ("top",): 2,
        ("a",): 3,
        ("a", "q.k"): 5,
        ("a", "dotted"): 6,
        ("a", "dotted", "key", "here"): 6,
        ("a", "b"): 7,
        ("a", "b", "arr"): 8,
        ("a", "b", "arr", 0): 9,
        ("a", "b", "arr", 1, "inline"): 10,
        ("a", "b", "text"): 12,
        ("a", "b", "after"): 15,
        ("list",): 16,
        ("list", 0): 16,
        ("list", 0, "v"): 17,
        ("list", 1): 18,
        ("list", 1, "v", "w"): 19,
        ("list", 1, "v", "z", 1): 19,
        ("list", 1, "sub"): 20,
        ("list", 1, "sub", "s"): 21,
        ("list", 1, "items", 0, "i"): 23,
        ("list", 1, "items", 1): 24,
        ("list", 1, "items", 1, "i"): 25,
    }
    assert {k: lines.get(k) for k in expected} == expected
    assert format_key(("list", 1, "items", 0, "i")) == "list[1].items[0].i"
    assert format_key(("a", "q.k")) == 'a."q.k"'


def leaf_paths(value: Any, prefix: Key = ()) -> list[Key]:
    """Every key path in parsed TOML data (array items included)."""
    paths: list[Key] = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            paths += leaf_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            paths += leaf_paths(v, (*prefix, n))
    return paths


NAMES = st.sampled_from(["a", "b", "x-y", "q.k", "é", "1", "sp ace"])
SCALARS = st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=8))


def toml_value(value: Any) -> str:
    """A TOML literal for a scalar, array or inline table (strings as JSON basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value).replace("inf", "inf") if value == value else "nan"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[\n  " + ",\n  ".join(toml_value(v) for v in value) + "\n]"
    inner = ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items())
    return "{ " + inner + " }"


def toml_string(text: str) -> str:
    """A TOML basic string: escape quotes, backslashes and control characters."""
    out = ""
    for c in text:
        if c in '"\\':
            out += "\\" + c
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out += f"\\u{ord(c):04x}"
        else:
            out += c
    return f'"{out}"'


def toml_document(doc: dict[str, Any]) -> str:
    """Scalars first, then [tables] and [[arrays of tables]]."""
    out: list[str] = []
    tables: list[str] = []
    for key, value in doc.items():
        name = toml_string(key)
        if isinstance(value, dict):
            body = "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in value.items())
            tables.append(f"[{name}]\n{body}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                body = "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in item.items())
                tables.append(f"[[{name}]]\n{body}")
        else:
            out.append(f"{name} = {toml_value(value)}\n")
    return "".join(out) + "\n".join(tables)


VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(NAMES, inner, min_size=1, max_size=3)
    ),
    max_leaves=8,
)
DOCUMENTS = st.dictionaries(
    NAMES,
    st.one_of(
        VALUES,
        st.dictionaries(NAMES, VALUES, max_size=3),
        st.lists(st.dictionaries(NAMES, VALUES, max_size=3), min_size=1, max_size=3),
    ),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(DOCUMENTS)
def test_key_lines_place_every_parsed_key(doc: dict[str, Any]) -> None:
    """For any TOML tomllib accepts, every key path it yields has a line in range."""
    text = toml_document(doc)
    parsed = tomllib.loads(text)
    lines = key_lines(text)
    total = text.count("\n") + 1
    for path in leaf_paths(parsed):
        assert 1 <= lines.get(path, 0) <= total, (path, text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_key_lines_never_raise_on_arbitrary_text(text: str) -> None:
    """The position scanner tolerates any text, valid TOML or not."""
    assert all(line >= 1 for line in key_lines(text).values())


# -- robustness ---------------------------------------------------------------

DEVICE_VALUES = st.one_of(
    SCALARS,
    st.sampled_from(["acme/m1", "t", "s", "/dev/ttyUSB0", "modbus-rtu", "modbus-tcp"]),
    st.integers(-2, 300),
)
KNOWN = st.sampled_from(
    ["id", "bus", "unit_id", "profile", "type", "device", "baudrate", "host", "port",
     "location", "tls", "max_bytes", "latitude", "longitude", "ca_file", "parity"]
)  # fmt: skip
TABLES = st.dictionaries(st.one_of(KNOWN, NAMES), st.one_of(DEVICE_VALUES, VALUES), max_size=6)
CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "site": TABLES,
        "buses": st.dictionaries(st.sampled_from(["s", "t", "bad name"]), TABLES, max_size=2),
        "devices": st.lists(TABLES, min_size=1, max_size=3),
        "uplink": TABLES,
        "storage": TABLES,
        "profiles_dir": st.sampled_from(["firmware-profiles", "nope", ""]),
        "log_level": DEVICE_VALUES,
        "extra": VALUES,
    },
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    write(folder, "firmware-profiles/acme/m1.toml", PROFILE)
    return folder


def assert_only_config_errors(path: Path) -> None:
    config, problems = check_config(path)
    assert (config is None) == bool(problems)
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems == problems
    for problem in problems:
        assert problem.line >= 0 and str(problem).startswith(f"{path}:")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS)
def test_toml_documents_only_ever_give_config_errors(fuzz_dir: Path, doc: dict[str, Any]) -> None:
    """Any TOML document: check_config never raises, load_config raises only ConfigError."""
    path = fuzz_dir / "gw.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    assert_only_config_errors(path)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_only_ever_gives_config_errors(fuzz_dir: Path, text: str) -> None:
    """Any text at all, TOML or not: never anything but ConfigError."""
    path = fuzz_dir / "junk.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    assert_only_config_errors(path)


REPO_PROFILES = Path(__file__).resolve().parents[1] / "firmware-profiles"
SITE_LINES = '[site]\nid = "s"\ngateway_id = "g"\nlatitude = 1.0\nlongitude = 2.0\n'


def where(tmp_path: Path, text: str) -> tuple[set[tuple[int, str]], list[Any]]:
    """Check ``text`` as a config file: the (line, field) of each problem, and the problems."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text(text)
    _, problems = check_config(cfg)
    return {(p.line, p.path) for p in problems}, problems


def test_serial_sensor_bus_rules(tmp_path: Path) -> None:
    """A serial-sensor bus takes one sensor, and passive mode only for PMS5003 / SDS011."""
    text = (
        f'profiles_dir = "{REPO_PROFILES}"\n'
        + SITE_LINES
        + '[buses.aq]\ntype = "serial-sensor"\ndevice = "/dev/ttyAMA0"\n'
        '[[devices]]\nid = "gps"\nbus = "aq"\nprofile = "u-blox/neo-6m"\nsensor_mode = "passive"\n'
        '[[devices]]\nid = "pm"\nbus = "aq"\nprofile = "plantower/pms5003"\n'
    )
    got, problems = where(tmp_path, text)
    assert got == {(14, "devices[0].sensor_mode"), (17, "devices[1].bus")}, problems


def test_opcua_security_settings_must_fit(tmp_path: Path) -> None:
    """OPC UA: mode must fit the policy, cert and key go together, secure needs a trust list."""
    text = (
        SITE_LINES + '[buses.plc]\ntype = "opcua"\nendpoint = "opc.tcp://127.0.0.1:4840"\n'
        'security_policy = "Basic256Sha256"\nsecurity_mode = "None"\n'
        f'certificate = "{tmp_path / "c.der"}"\n'
    )
    (tmp_path / "c.der").write_bytes(b"x")
    got, problems = where(tmp_path, text)
    assert got == {(10, "buses.plc.security_mode"), (6, "buses.plc"), (6, "buses.plc.trust")}, (
        problems
    )


def test_anomaly_watch_names_real_devices_and_points(tmp_path: Path) -> None:
    """[anomaly] watch: an unknown device or a point its profile lacks is named with its line."""
    text = (
        f'profiles_dir = "{REPO_PROFILES}"\n' + SITE_LINES + '[buses.tcp]\ntype = "modbus-tcp"\n'
        '[[devices]]\nid = "m1"\nbus = "tcp"\nunit_id = 1\nprofile = "eastron/sdm630"\n'
        "[anomaly]\nwatch = [\n"
        '  {device = "m2", point = "frequency"},\n'
        '  {device = "m1", point = "frequenc"},\n'
        "]\n"
    )
    got, problems = where(tmp_path, text)
    assert got == {(16, "anomaly.watch[0].device"), (17, "anomaly.watch[1].point")}, problems


def test_a_watched_device_with_its_own_problem_is_reported_once(tmp_path: Path) -> None:
    """A typo in a watched device's profile is reported at the device, not also at the watch."""
    text = (
        f'profiles_dir = "{REPO_PROFILES}"\n' + SITE_LINES + '[buses.tcp]\ntype = "modbus-tcp"\n'
        '[[devices]]\nid = "m1"\nbus = "tcp"\nunit_id = 1\nprofile = "eastron/sdm63"\n'
        "[anomaly]\nwatch = [\n"
        '  {device = "m1", point = "frequency"},\n'
        "]\n"
    )
    got, problems = where(tmp_path, text)
    assert got == {(13, "devices[0].profile")}, problems


def test_a_bad_metrics_listen_says_what_is_wrong_once(tmp_path: Path) -> None:
    """metrics.listen: the problem, what is allowed and what was given, each said once."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text(SITE_LINES + '[metrics]\nlisten = "127.0.0.1:99999"\n')
    _config, problems = check_config(cfg)
    assert len(problems) == 1, problems
    text = str(problems[0])
    assert "metrics.listen: port 99999 is out of range (1..65535)" in text
    assert text.count("got") == 1 and "keep metrics on loopback" in text


def test_ble_silence_restart_reaches_the_driver(tmp_path: Path) -> None:
    """The BLE bus's silence_restart_s is validated and handed to the driver."""
    from cityedge.drivers.ble.driver import build_source
    from cityedge.sources import SourceContext

    text = (
        f'profiles_dir = "{REPO_PROFILES}"\n'
        + SITE_LINES
        + '[buses.air]\ntype = "ble"\nsilence_restart_s = 30\n'
        '[[devices]]\nid = "tag"\nbus = "air"\nprofile = "ruuvi/ruuvitag"\n'
        'mac = "AA:BB:CC:DD:EE:FF"\n'
    )
    cfg = tmp_path / "gw.toml"
    cfg.write_text(text)
    config = load_config(cfg)
    src = build_source(config.buses["air"], config.devices, SourceContext(config.site, tmp_path))
    assert src._silence_s == 30.0
    cfg.write_text(text.replace("silence_restart_s = 30", "silence_restart_s = 1"))
    _, problems = check_config(cfg)
    assert [(p.line, p.path) for p in problems] == [(9, "buses.air.silence_restart_s")]


def test_a_profile_installed_by_signed_command_is_found_without_being_named(
    tmp_path: Path,
) -> None:
    """A device whose profile exists only in <state_dir>/profiles checks (and so starts)."""
    shipped = tmp_path / "shipped"
    (shipped / "acme").mkdir(parents=True)
    state = tmp_path / "state"
    (state / "profiles" / "acme").mkdir(parents=True)
    (state / "profiles" / "acme" / "m2.toml").write_text(PROFILE.replace('"M1"', '"M2"'))
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'profiles_dir = "{shipped}"\n'
        + SITE
        + f'[storage]\nstate_dir = "{state}"\n'
        + '[buses.tcp]\ntype = "modbus-tcp"\n'
        + '[[devices]]\nid = "m"\nbus = "tcp"\nunit_id = 1\nprofile = "acme/m2"\n'
    )
    config, problems = check_config(cfg)
    assert problems == [] and config is not None
    assert config.devices[0].profile_name == "acme/m2"
    (state / "profiles" / "acme" / "m2.toml").unlink()
    _, problems = check_config(cfg)
    assert any("acme/m2" in str(p) for p in problems)
