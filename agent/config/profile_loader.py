"""Reading and validating device profiles (``firmware-profiles/<vendor>/<model>.toml``).

Every rule of ``docs/profiles.md`` is checked and every problem is reported
at once, as ``FILE:LINE: points[3].order: ...``, like the config. The result
is a :class:`cityedge.profiles.Profile`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, get_args

from cityedge.config.alert_rules import ALERT
from cityedge.config.anomaly_models import MODEL, InstalledModels
from cityedge.config.checks import (
    INVALID,
    Context,
    Field,
    Invalid,
    a_or_an,
    array,
    choice,
    did_you_mean,
    free_table,
    integer,
    number,
    parse_toml,
    records,
    table,
    text,
    validate_table,
)
from cityedge.config.toml_lines import Key, format_key
from cityedge.errors import ConfigError, Problem
from cityedge.profiles import (
    BIT_REGISTERS,
    ORDERS,
    PROTOCOLS,
    REGISTER_TYPES,
    WORDS,
    AddressRange,
    DataType,
    FieldMap,
    Point,
    Profile,
    WriteRange,
)
from cityedge.readings import SENSOR_FAMILIES

PROFILE_NAME = r"[A-Za-z0-9_-][A-Za-z0-9_.-]*/[A-Za-z0-9_-][A-Za-z0-9_.-]*"
PROFILE_NAME_HINT = '"<vendor>/<model>", e.g. "eastron/sdm630"'
DATA_TYPES: tuple[str, ...] = get_args(DataType)
_LAST_ADDRESS = 65535

# The profile's byte_order (named for 32 bits) narrowed or widened to a width in bytes.
_NARROW: dict[int, dict[str, str]] = {
    2: {"ABCD": "AB", "CDAB": "AB", "BADC": "BA", "DCBA": "BA"},
    4: {o: o for o in ORDERS[4]},
    8: {"ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"},
}


def _range_post(ctx: Context, rng: AddressRange, key: Key) -> None:
    if rng.start > rng.end:
        ctx.report((*key, "end"), "must not be below start", got=rng.end)


def _write_post(ctx: Context, rng: WriteRange, key: Key) -> None:
    if rng.min > rng.max:
        ctx.report((*key, "max"), "must not be below min", got=rng.max)


def _scale(ctx: Context, value: Any, key: Key) -> float:
    scale: float = number()(ctx, value, key)
    if scale == 0:
        raise Invalid("0 would turn every value into 0", "any number except 0")
    return scale


ADDRESS = integer(0, _LAST_ADDRESS)
REGISTER = choice(*REGISTER_TYPES)
FAMILY = choice(*SENSOR_FAMILIES)

# Payload codecs each protocol knows; a profile names one of its protocol's.
CODECS: dict[str, tuple[str, ...]] = {
    "modbus": (),
    "opcua": (),
    "serial": ("pms5003", "sds011", "nmea", "generic"),
    "lorawan": ("cayenne", "dragino-ldds75", "dragino-lht65", "elsys"),
    "ble": ("bthome", "ruuvi"),
}

PROFILE_FIELDS = {
    "protocol": Field(choice(*PROTOCOLS)),
    "codec": Field(text()),
    "vendor": Field(text(), required=True),
    "model": Field(text(), required=True),
    "family": Field(FAMILY, required=True),
    "source": Field(text(), required=True),
    "firmware": Field(array(text())),
    "byte_order": Field(choice(*ORDERS[4])),
    "max_registers": Field(integer(1, 125)),
    "max_bits": Field(integer(1, 2000)),
    "max_gap": Field(integer(0, 125)),
}
UNREADABLE_FIELDS = {
    "register": Field(REGISTER, required=True),
    "start": Field(ADDRESS, required=True),
    "end": Field(ADDRESS, required=True),
}
WRITE_FIELDS = {"min": Field(number(), required=True), "max": Field(number(), required=True)}
POINT_FIELDS = {
    "name": Field(text(r"[a-z0-9_]+", hint="lowercase letters, digits, _"), required=True),
    "register": Field(REGISTER, required=True),
    "address": Field(ADDRESS, required=True),
    "type": Field(choice(*DATA_TYPES), required=True),
    "order": Field(text()),
    "scale": Field(_scale),
    "offset": Field(number()),
    "unit": Field(text(nonempty=False)),
    "family": Field(FAMILY),
    "length": Field(integer(1, 125)),
    "bits": Field(array(integer(0, 15), min_items=2, max_items=2)),
    "write": Field(table(WRITE_FIELDS, WriteRange, _write_post)),
    "description": Field(text(nonempty=False)),
    "model": Field(MODEL),
    "alert": ALERT,
}

# The other protocols map what a device yields to points with [[fields]].
FIELD_COMMON = {
    "key": Field(text(), required=True),
    "name": Field(text(r"[a-z0-9_]+", hint="lowercase letters, digits, _"), required=True),
    "unit": Field(text(nonempty=False)),
    "family": Field(FAMILY),
    "scale": Field(_scale),
    "offset": Field(number()),
    "write": Field(table(WRITE_FIELDS, WriteRange, _write_post)),
    "description": Field(text(nonempty=False)),
    "model": Field(MODEL),
    "alert": ALERT,
}
OPCUA_TYPES = ("Boolean", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float",
               "Double", "String")  # fmt: skip
# Per-field settings of each protocol, kept in FieldMap.options.
FIELD_OPTIONS: dict[str, dict[str, Field]] = {
    "opcua": {
        "sampling_interval_ms": Field(number(0)),
        "deadband": Field(number(0)),
        "deadband_type": Field(choice("none", "absolute", "percent")),
        "data_type": Field(choice(*OPCUA_TYPES)),
    },
    "serial": {},
    "lorawan": {},
    "ble": {},
}


def _item_fields(protocol: str) -> dict[str, Field]:
    """The keys of a profile's [[points]] (modbus) or [[fields]] (the other protocols)."""
    if protocol == "modbus":
        return POINT_FIELDS
    return {**FIELD_COMMON, **FIELD_OPTIONS.get(protocol, {})}


def _elsewhere(protocol: str) -> dict[str, str | None]:
    """Point and field keys of the other protocols: said where they belong, not "unknown"."""
    own = _item_fields(protocol)
    owners: dict[str, list[str]] = {}
    for other in PROTOCOLS:
        for name in _item_fields(other):
            if name not in own:
                owners.setdefault(name, []).append(other)
    return {
        name: f"only for {_either(them)} profiles, not {protocol} ones"
        for name, them in owners.items()
    }


def _either(names: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _document(protocol: str) -> dict[str, Field]:
    """A whole profile: [[points]] for modbus; a codec and [[fields]] for the others."""
    head = Field(table(PROFILE_FIELDS), required=True)
    items = Field(records(_item_fields(protocol), _elsewhere(protocol)), required=True)
    if protocol == "modbus":
        unreadable = array(table(UNREADABLE_FIELDS, AddressRange, _range_post))
        return {"profile": head, "unreadable": Field(unreadable), "points": items}
    return {"profile": head, "codec": Field(free_table()), "fields": items}


def profile_path(profiles_dir: Path, name: str) -> Path:
    """The file a profile name refers to: ``<dir>/<vendor>/<model>.toml``."""
    return profiles_dir / f"{name}.toml"


def available_profiles(profiles_dir: Path) -> list[str]:
    """Names of the profiles in ``profiles_dir`` (empty if it is missing)."""
    try:
        return sorted(f"{p.parent.name}/{p.stem}" for p in profiles_dir.glob("*/*.toml"))
    except OSError:
        return []


class ProfileCache:
    """Profiles already read during one load, by (folder, name).

    ``models``: the anomaly models the config's agent can load; a point
    naming another is a problem (None: model names are not checked).
    """

    def __init__(self, models: InstalledModels | None = None) -> None:
        self._seen: dict[tuple[Path, str], tuple[Profile | None, list[Problem]]] = {}
        self._models = models

    def check(self, profiles_dir: Path, name: str) -> tuple[Profile | None, list[Problem]]:
        """Like :func:`check_profile`, reading each profile at most once."""
        key = (profiles_dir, name)
        if key not in self._seen:
            self._seen[key] = check_profile(profiles_dir, name, self._models)
        return self._seen[key]


def load_profile(profiles_dir: Path, name: str) -> Profile:
    """Read and validate one profile; raise :class:`ConfigError` listing every problem."""
    profile, problems = check_profile(profiles_dir, name)
    if profile is None or problems:
        raise ConfigError(problems)
    return profile


def check_profile(
    profiles_dir: Path, name: str, models: InstalledModels | None = None
) -> tuple[Profile | None, list[Problem]]:
    """Read and validate one profile; never raises. The profile is None on problems.

    With ``models``, a point's anomaly ``model`` must be one of them.
    """
    file = profile_path(profiles_dir, name)
    label = str(file)
    if re.fullmatch(PROFILE_NAME, name) is None:
        problem = Problem(label, 0, "(name)", "invalid profile name", PROFILE_NAME_HINT, name, True)
        return None, [problem]
    try:
        data = file.read_bytes()
    except OSError as exc:
        return None, [Problem(label, 0, "(file)", f"cannot read profile: {exc.strerror or exc}")]
    doc, ctx = parse_toml(label, data, file.parent)
    if doc is None:
        return None, ctx.problems
    head = doc.get("profile")
    protocol = head.get("protocol", "modbus") if isinstance(head, dict) else "modbus"
    modbus = protocol == "modbus" or protocol not in PROTOCOLS
    values = validate_table(ctx, doc, _document("modbus" if modbus else protocol), ()) or {}
    items = "points" if modbus else "fields"
    _check_names(ctx, items, values.get(items, []))
    if models is not None:
        _check_models(ctx, items, values.get(items, []), models)
    if modbus:
        profile = _build(ctx, name, values, hashlib.sha256(data).hexdigest())
    else:
        profile = _build_push(ctx, name, protocol, values, hashlib.sha256(data).hexdigest())
    problems = sorted(ctx.problems, key=lambda p: p.line)
    return (None, problems) if problems else (profile, [])


def _build(ctx: Context, name: str, values: dict[str, Any], sha256: str) -> Profile | None:
    head = values.get("profile", INVALID)
    head = {} if head is INVALID else dict(head)
    unreadable = [r for r in values.get("unreadable", []) if r is not INVALID]
    points: list[tuple[Key, Point]] = []
    for n, raw in enumerate(values.get("points", [])):
        point = None if raw is None else _point(ctx, ("points", n), raw, head)
        if point is not None:
            points.append((("points", n), point))
    _check_overlaps(ctx, points, unreadable)
    if ctx.problems:
        return None
    vendor, model = head.pop("vendor"), head.pop("model")
    head.pop("byte_order", None)  # already applied to each point's order
    return Profile(
        name=name,
        vendor=vendor,
        model=model,
        points=tuple(p for _, p in points),
        unreadable=tuple(unreadable),
        sha256=sha256,
        **{**head, "firmware": tuple(head.get("firmware", ()))},
    )


def _point(ctx: Context, key: Key, raw: dict[str, Any], head: dict[str, Any]) -> Point | None:
    """Apply the rules that depend on register and type; None if it cannot be placed."""
    register, kind = raw.get("register"), raw.get("type")
    if register is None or kind is None:
        return None  # already reported as missing or invalid
    bits_register = register in BIT_REGISTERS
    if bits_register != (kind == "bool"):
        message = (
            "coils and discrete inputs hold bool only"
            if bits_register
            else "bool is only for coil and discrete_input points"
        )
        ctx.report((*key, "type"), message, got=kind)
    _needs(ctx, key, "length", kind == "string", "string")
    _needs(ctx, key, "bits", kind == "bitfield", "bitfield")
    bits = raw.get("bits")
    if bits is not None and INVALID not in bits and bits[0] > bits[1]:
        ctx.report((*key, "bits"), "low bit must not exceed high bit", "[low, high]", bits)
    if (*key, "write") in ctx.lines and register not in ("coil", "holding"):
        ctx.report((*key, "write"), "only coil and holding points can be written")
    order = _order(ctx, key, raw, head.get("byte_order", "ABCD"))
    if "address" not in raw or (bits is not None and INVALID in bits):
        return None  # the problem is reported; nothing to place in the address map
    fields = {k: v for k, v in raw.items() if k not in ("bits", "order")}
    fields.setdefault("name", format_key(key))  # a bad name: still check the addresses
    fields.setdefault("family", head.get("family", "energy"))
    point = Point(order=order, bits=(bits[0], bits[1]) if bits else None, **fields)
    _check_span(ctx, key, point, head)
    return point  # placed even if a rule failed, so overlaps are found too


def _needs(ctx: Context, key: Key, name: str, needed: bool, kind: str) -> None:
    declared = (*key, name) in ctx.lines  # present, even if its value was bad
    if needed and not declared:
        ctx.report(key, f"missing required key {name!r} for a {kind} point")
    elif not needed and declared:
        ctx.report((*key, name), f"only for {kind} points")


def _order(ctx: Context, key: Key, raw: dict[str, Any], byte_order: str) -> str:
    register, kind = raw["register"], raw["type"]
    width = 2 if kind in ("string", "bool") else 2 * WORDS.get(kind, 1)
    default: str = _NARROW[width].get(byte_order, ORDERS[width][0])
    if "order" not in raw:
        return default
    order: str = raw["order"]
    if register in BIT_REGISTERS:
        ctx.report((*key, "order"), f"does not apply to {register} points")
    elif order not in ORDERS[width]:
        allowed = ", ".join(ORDERS[width])
        ctx.report((*key, "order"), f"not a {8 * width}-bit byte order", allowed, order)
    return order


def _check_span(ctx: Context, key: Key, point: Point, head: dict[str, Any]) -> None:
    if point.end > _LAST_ADDRESS + 1:
        message = f"the point spans {point.words} registers and runs past address 65535"
        ctx.report((*key, "address"), message, "address + registers <= 65536", point.address)
    limit = int(head.get("max_registers", 125))
    if point.register not in BIT_REGISTERS and point.words > limit:
        message = f"the point spans {point.words} registers, more than one read may ask for"
        ctx.report((*key, "length"), message, f"<= max_registers ({limit})", point.words)


def _check_names(ctx: Context, items: str, raws: list[dict[str, Any] | None]) -> None:
    """Point names are unique: checked on every point with a valid name, whatever else is bad."""
    first: dict[str, Key] = {}
    for n, raw in enumerate(raws):
        if raw is None or "name" not in raw:
            continue
        key: Key = (items, n)
        if raw["name"] in first:
            line = ctx.line(first[raw["name"]])
            ctx.report((*key, "name"), f"duplicate point name (first at line {line})")
        first.setdefault(raw["name"], key)


def _check_models(
    ctx: Context, items: str, raws: list[dict[str, Any] | None], models: InstalledModels
) -> None:
    for n, raw in enumerate(raws):
        if raw is not None and "model" in raw:
            models.check(ctx, (items, n, "model"), raw["model"])


def _check_overlaps(
    ctx: Context, points: list[tuple[Key, Point]], unreadable: list[AddressRange]
) -> None:
    ordered = sorted(points, key=lambda kp: (kp[1].register, kp[1].address, kp[1].end))
    widest: tuple[Key, Point] | None = None  # the earlier point reaching furthest
    for key, point in ordered:
        if widest is not None:
            other = widest[1]
            shared_bitfield = point.type == other.type == "bitfield" and (
                point.address == other.address
            )
            same = other.register == point.register
            if same and point.address < other.end and not shared_bitfield:
                line = ctx.line(widest[0])
                ctx.report(key, f"overlaps point {other.name!r} (line {line})")
        if widest is None or widest[1].register != point.register or point.end > widest[1].end:
            widest = (key, point)
        for rng in unreadable:
            if (
                rng.register == point.register
                and rng.start < point.end
                and point.address <= rng.end
            ):
                where = f"{rng.register} {rng.start}..{rng.end}"
                ctx.report(key, f"lies in the unreadable range {where}")


def _build_push(
    ctx: Context, name: str, protocol: str, values: dict[str, Any], sha256: str
) -> Profile | None:
    """A profile of a protocol that yields named values: [[fields]] and a codec."""
    head = values.get("profile", INVALID)
    head = {} if head is INVALID else dict(head)
    codec = str(head.pop("codec", ""))
    _check_codec(ctx, protocol, codec)
    options = values.get("codec") or {}
    produced = _codec_keys(ctx, protocol, codec, options)
    _check_keys(ctx, codec, produced, values.get("fields", []))
    for modbus_only in ("byte_order", "max_registers", "max_bits", "max_gap"):
        if ("profile", modbus_only) in ctx.lines:
            ctx.report(("profile", modbus_only), "only for modbus profiles")
    maps: list[FieldMap] = []
    common = set(FIELD_COMMON)
    for raw in values.get("fields", []):
        if raw is None or "key" not in raw or "name" not in raw:
            continue
        plain = {k: v for k, v in raw.items() if k in common}
        plain.setdefault("family", head.get("family", "energy"))
        extra = {k: v for k, v in raw.items() if k not in common}
        maps.append(FieldMap(**plain, options=extra))
    if ctx.problems:
        return None
    head.pop("protocol", None)
    vendor, model = head.pop("vendor"), head.pop("model")
    return Profile(
        name=name,
        vendor=vendor,
        model=model,
        protocol=protocol,
        codec=codec,
        codec_options=dict(options),
        fields=tuple(maps),
        sha256=sha256,
        **{**head, "firmware": tuple(head.get("firmware", ()))},
    )


def _check_codec(ctx: Context, protocol: str, codec: str) -> None:
    """The profile names one of its protocol's codecs, or none if the protocol has none."""
    known = CODECS.get(protocol, ())
    key: Key = ("profile", "codec")
    if key in ctx.lines and not codec:
        return  # not a string: reported
    if known and not codec:
        message = f"missing required key 'codec' for {a_or_an(protocol)} profile"
        ctx.report(("profile",), message, ", ".join(known))
    elif known and codec not in known:
        message = f"not {a_or_an(protocol)} codec{did_you_mean(codec, known)}"
        ctx.report(key, message, ", ".join(known), codec)
    elif not known and codec:
        ctx.report(key, f"{protocol} profiles take no codec", "leave codec out", codec)


def _codec_keys(
    ctx: Context, protocol: str, codec: str, options: dict[str, Any]
) -> list[str] | None:
    """The values a serial codec yields, to check [[fields]] keys against; None: not known."""
    if protocol != "serial":
        return None
    if codec == "generic":
        return _generic_keys(ctx, options)
    from cityedge.drivers.serial.codecs import BUILTIN

    builtin = BUILTIN.get(codec)
    return sorted(builtin.keys) if builtin is not None and builtin.keys is not None else None


def _generic_keys(ctx: Context, options: dict[str, Any]) -> list[str] | None:
    """A generic serial codec's [codec] table, checked by the codec itself: the names it yields."""
    from cityedge.drivers.serial.generic import SpecError, load_codec

    try:
        return list(load_codec(options).units)
    except SpecError as exc:
        for problem in exc.problems:
            ctx.report(("codec",), problem)
        return None


def _check_keys(
    ctx: Context, codec: str, produced: list[str] | None, raws: list[dict[str, Any] | None]
) -> None:
    """Each field maps a value the codec yields: another key would never get a value."""
    if produced is None:
        return  # not known here, or the codec's own problems are reported
    for n, raw in enumerate(raws):
        if raw is not None and "key" in raw and raw["key"] not in produced:
            message = f"the {codec} codec yields no such value{did_you_mean(raw['key'], produced)}"
            ctx.report(("fields", n, "key"), message, ", ".join(produced), raw["key"])
