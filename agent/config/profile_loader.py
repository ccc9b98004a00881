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

from cityedge.config.checks import (
    INVALID,
    Context,
    Field,
    array,
    choice,
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
    REGISTER_TYPES,
    WORDS,
    AddressRange,
    DataType,
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


ADDRESS = integer(0, _LAST_ADDRESS)
REGISTER = choice(*REGISTER_TYPES)
FAMILY = choice(*SENSOR_FAMILIES)

PROFILE_FIELDS = {
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
    "scale": Field(number()),
    "offset": Field(number()),
    "unit": Field(text(nonempty=False)),
    "family": Field(FAMILY),
    "length": Field(integer(1, 125)),
    "bits": Field(array(integer(0, 15), min_items=2, max_items=2)),
    "write": Field(table(WRITE_FIELDS, WriteRange, _write_post)),
    "description": Field(text(nonempty=False)),
    "model": Field(text()),
}
DOCUMENT_FIELDS = {
    "profile": Field(table(PROFILE_FIELDS), required=True),
    "unreadable": Field(array(table(UNREADABLE_FIELDS, AddressRange, _range_post))),
    "points": Field(records(POINT_FIELDS), required=True),
}


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
    """Profiles already read during one load, by (folder, name)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Path, str], tuple[Profile | None, list[Problem]]] = {}

    def check(self, profiles_dir: Path, name: str) -> tuple[Profile | None, list[Problem]]:
        """Like :func:`check_profile`, reading each profile at most once."""
        key = (profiles_dir, name)
        if key not in self._seen:
            self._seen[key] = check_profile(profiles_dir, name)
        return self._seen[key]


def load_profile(profiles_dir: Path, name: str) -> Profile:
    """Read and validate one profile; raise :class:`ConfigError` listing every problem."""
    profile, problems = check_profile(profiles_dir, name)
    if profile is None or problems:
        raise ConfigError(problems)
    return profile


def check_profile(profiles_dir: Path, name: str) -> tuple[Profile | None, list[Problem]]:
    """Read and validate one profile; never raises. The profile is None on problems."""
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
    values = validate_table(ctx, doc, DOCUMENT_FIELDS, ()) or {}
    profile = _build(ctx, name, values, hashlib.sha256(data).hexdigest())
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
    _check_names(ctx, points)
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


def _check_names(ctx: Context, points: list[tuple[Key, Point]]) -> None:
    first: dict[str, Key] = {}
    for key, point in points:
        if point.name in first:
            line = ctx.line(first[point.name])
            ctx.report((*key, "name"), f"duplicate point name (first at line {line})")
        else:
            first[point.name] = key


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
