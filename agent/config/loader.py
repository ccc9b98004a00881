"""Load the gateway's TOML config into :class:`cityedge.config.model.Config`.

:func:`check_config` validates the whole file (and every profile it names)
and returns every problem at once; :func:`load_config` raises
:class:`ConfigError` carrying them. Each section is a field-spec table below:
a new section (OPC UA, LoRaWAN...) is a new spec in :data:`TOP_FIELDS`. A
section the :class:`Config` dataclass has no attribute for yet lands in
``Config.extra``. See ``docs/config.md`` for the reference.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any

import cityedge
from cityedge.config.anomaly_models import MODEL, InstalledModels
from cityedge.config.checks import (
    INVALID,
    Context,
    Field,
    Fields,
    Invalid,
    a_or_an,
    array,
    boolean,
    choice,
    did_you_mean,
    integer,
    number,
    parse_toml,
    path,
    raw_records,
    size,
    table,
    text,
    validate_table,
)
from cityedge.config.driver_specs import (
    BUS_OPTIONS,
    BUS_PROTOCOL,
    DEVICE_OPTIONS,
    HOST,
    PORT,
    SERIAL_LINE,
    DeviceEntry,
    check_radio_ids,
    device_post,
)
from cityedge.config.model import (
    AlertsConfig,
    AnomalyConfig,
    BusConfig,
    Config,
    DeviceConfig,
    DownlinkConfig,
    HealthConfig,
    MetricsConfig,
    SigningConfig,
    SiteConfig,
    StorageConfig,
    TlsConfig,
    UplinkConfig,
    WatchConfig,
)
from cityedge.config.profile_loader import (
    PROFILE_NAME,
    PROFILE_NAME_HINT,
    ProfileCache,
    available_profiles,
    profile_path,
)
from cityedge.config.toml_lines import Key
from cityedge.errors import ConfigError, Problem

PROFILES_ENV = "CITYEDGE_PROFILES"
SHARED_PROFILES = Path("/usr/share/cityedge/firmware-profiles")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

ID = text(r"[A-Za-z0-9_.:-]+", hint="letters, digits, _ . : -")
POSITIVE = number(0, above=True)
LATITUDE = number(-90, 90)
LONGITUDE = number(-180, 180)


def _topic_prefix(ctx: Context, value: Any, key: Key) -> str:
    hint = "MQTT topic levels without + or #, no leading or trailing /"
    prefix: str = text(hint=hint)(ctx, value, key)
    if "+" in prefix or "#" in prefix or "\0" in prefix:
        raise Invalid("must not contain MQTT wildcards", hint)
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        raise Invalid("must not have empty topic levels", hint)
    return prefix


def _tls_post(ctx: Context, tls: TlsConfig, key: Key) -> None:
    if tls.key_file is not None and tls.cert_file is None:
        ctx.report((*key, "key_file"), "needs cert_file as well")


def _uplink_post(ctx: Context, up: UplinkConfig, key: Key) -> None:
    if up.reconnect_max_s < up.reconnect_min_s:
        allowed = f">= reconnect_min_s ({up.reconnect_min_s})"
        ctx.report((*key, "reconnect_max_s"), "below reconnect_min_s", allowed, up.reconnect_max_s)
    if up.protocol == "mqtt311" and up.password is not None and up.username is None:
        ctx.report((*key, "password"), "MQTT 3.1.1 sends a password only with a username")


SITE_FIELDS: Fields = {
    "id": Field(ID, required=True),
    "gateway_id": Field(ID, required=True),
    "latitude": Field(LATITUDE, required=True),
    "longitude": Field(LONGITUDE, required=True),
    "cell_size_m": Field(integer(1, 100_000)),
}
BUS_COMMON: Fields = {
    "type": Field(choice(*BUS_PROTOCOL), required=True),
    "timeout_s": Field(number(0, 60, above=True)),
    "inter_frame_gap_s": Field(number(0, 10)),
}
BUS_FIELDS: dict[str, Fields] = {
    "modbus-tcp": {
        "host": Field(HOST),
        "port": Field(PORT),
        "max_in_flight": Field(integer(1, 256)),
    },
    "modbus-rtu": dict(SERIAL_LINE),
    **BUS_OPTIONS,
}
LOCATION_FIELDS: Fields = {
    "latitude": Field(LATITUDE, required=True),
    "longitude": Field(LONGITUDE, required=True),
}
DEVICE_FIELDS: Fields = {
    "id": Field(ID, required=True),
    "bus": Field(text(), required=True),
    "profile": Field(
        text(PROFILE_NAME, hint=PROFILE_NAME_HINT), required=True, attr="profile_name"
    ),
    "poll_interval_s": Field(POSITIVE),
    "timeout_s": Field(number(0, 60, above=True)),
    "retries": Field(integer(0, 10)),
    "backoff_max_s": Field(POSITIVE),
    "max_gap": Field(integer(0, 125)),
    "location": Field(table(LOCATION_FIELDS)),
}
TLS_FIELDS: Fields = {
    "ca_file": Field(path("file")),
    "cert_file": Field(path("file")),
    "key_file": Field(path("file")),
    "insecure_skip_verify": Field(boolean()),
}
UPLINK_FIELDS: Fields = {
    "broker": Field(HOST),
    "port": Field(PORT),
    "protocol": Field(choice("mqtt5", "mqtt311")),
    "client_id": Field(text(r"[^\s+#/]*", nonempty=False, hint="no spaces, +, #, /")),
    "topic_prefix": Field(_topic_prefix),
    "username": Field(text(nonempty=False)),
    "password": Field(text(nonempty=False)),
    "keepalive_s": Field(integer(0, 65535)),
    "tls": Field(table(TLS_FIELDS, TlsConfig, _tls_post)),
    "batch_max_readings": Field(integer(1, 1_000_000)),
    "batch_max_bytes": Field(size(1024)),
    "batch_max_age_s": Field(POSITIVE),
    "max_inflight_batches": Field(integer(1, 65535)),
    "backlog_share": Field(number(0, 1)),
    "live_window_s": Field(POSITIVE),
    "reconnect_min_s": Field(POSITIVE),
    "reconnect_max_s": Field(POSITIVE),
}
STORAGE_FIELDS: Fields = {
    "path": Field(path()),
    "max_bytes": Field(size(4096)),
    "drop_policy": Field(choice("oldest-routine-first")),
    "durability": Field(choice("full", "normal")),
    "state_dir": Field(path()),
}


def _public_key(ctx: Context, value: Any, key: Key) -> str:
    from cityedge.signing.algorithms import PublicKey

    hint = '"<algorithm> <base64>", as `cityedge keys show` prints it'
    line: str = text(hint=hint)(ctx, value, key)
    try:
        PublicKey.from_text(line)
    except ValueError as exc:
        raise Invalid(f"not a public key: {exc}", hint) from None
    return line


def _listen(ctx: Context, value: Any, key: Key) -> str:
    from cityedge.metrics import parse_listen

    hint = '"127.0.0.1:9108" (keep metrics on loopback)'
    listen: str = text(hint=hint)(ctx, value, key)
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise Invalid(str(exc), hint) from None
    return listen


WATCH_FIELDS: Fields = {
    "device": Field(text(), required=True),
    "point": Field(text(), required=True),
    "model": Field(MODEL),
}
ANOMALY_FIELDS: Fields = {
    "tick_s": Field(number(0.05, 60)),
    "model_dir": Field(path("dir")),
    "watch": Field(array(table(WATCH_FIELDS, WatchConfig))),
}


def _anomaly(**values: Any) -> AnomalyConfig:
    return AnomalyConfig(**{**values, "watch": tuple(values.get("watch", ()))})


SIGNING_FIELDS: Fields = {
    "enabled": Field(boolean()),
    "socket": Field(path()),
    "timeout_s": Field(POSITIVE),
}
DOWNLINK_FIELDS: Fields = {
    "authority_keys": Field(array(_public_key)),
    "window_s": Field(POSITIVE),
}


def _downlink(**values: Any) -> DownlinkConfig:
    keys = tuple(values.pop("authority_keys", ()))
    return DownlinkConfig(authority_keys=keys, **values)


def _buses(ctx: Context, value: Any, key: Key) -> dict[str, dict[str, Any] | None]:
    if not isinstance(value, dict):
        raise Invalid("must be a table of buses, each [buses.NAME]")
    return {name: _bus(ctx, name, bus, (*key, name)) for name, bus in value.items()}


def _bus(ctx: Context, name: str, value: Any, key: Key) -> dict[str, Any] | None:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        ctx.report(key, "invalid bus name", "letters, digits, _ -", name)
    kind = value.get("type") if isinstance(value, dict) else None
    own = BUS_FIELDS.get(kind) if isinstance(kind, str) else None
    owners: dict[str, list[str]] = {}
    for other, fields in BUS_FIELDS.items():
        if other != kind:
            for field_name in fields:
                owners.setdefault(field_name, []).append(other)
    elsewhere: dict[str, str | None] = {
        k: (f"only for {' or '.join(types)} buses" if own is not None else None)
        for k, types in owners.items()
        if own is None or k not in own
    }
    values = validate_table(ctx, value, {**BUS_COMMON, **(own or {})}, key, elsewhere)
    if values is not None and kind == "opcua":
        _opcua_post(ctx, key, values)
    return None if values is None else {"name": name, **values}


def _opcua_post(ctx: Context, key: Key, values: dict[str, Any]) -> None:
    """OPC UA security settings that only make sense together.

    Without ``security_mode`` the mode follows the policy, as the OPC UA
    source and ``cityedge opcua browse`` do: None for None, SignAndEncrypt
    otherwise. A key whose own value is bad is reported once, at itself:
    the rules that depend on it are skipped.
    """
    bad = {name for name in BUS_OPTIONS["opcua"] if (*key, name) in ctx.lines} - set(values)
    policy = values.get("security_policy", "None")
    mode = values.get("security_mode")
    fits = mode is None or (policy == "None") == (mode == "None")  # None: left out or bad
    if not fits and "security_policy" not in bad:
        ctx.report((*key, "security_mode"), f"does not fit security_policy {policy!r}",
                   "None with None; Sign or SignAndEncrypt with Basic256Sha256 "
                   "(leave it out: it follows the policy)", mode)  # fmt: skip
    if ("certificate" in values) != ("private_key" in values) and not bad & _KEY_PAIR:
        ctx.report(key, "certificate and private_key go together (or leave both out: "
                   "the gateway creates its own)")  # fmt: skip
    if policy != "None" and not values.get("trust") and "trust" not in bad:
        ctx.report((*key, "trust"), "a secure connection needs the server's certificate here",
                   "a list of certificate files (.der or .pem)")  # fmt: skip


_KEY_PAIR = {"certificate", "private_key"}


TOP_FIELDS: Fields = {
    "site": Field(table(SITE_FIELDS, SiteConfig), required=True),
    "buses": Field(_buses),
    "devices": Field(raw_records()),
    "uplink": Field(table(UPLINK_FIELDS, UplinkConfig, _uplink_post)),
    "storage": Field(table(STORAGE_FIELDS, StorageConfig)),
    "alerts": Field(table({"resend_s": Field(POSITIVE)}, AlertsConfig)),
    "signing": Field(table(SIGNING_FIELDS, SigningConfig)),
    "downlink": Field(table(DOWNLINK_FIELDS, _downlink)),
    "metrics": Field(table({"listen": Field(_listen)}, MetricsConfig)),
    "health": Field(table({"every_s": Field(number(10))}, HealthConfig)),
    "anomaly": Field(table(ANOMALY_FIELDS, _anomaly)),
    "profiles_dir": Field(path("dir")),
    "log_level": Field(choice(*LOG_LEVELS)),
}


def load_config(path: Path, profiles_dir: Path | None = None) -> Config:
    """Load and validate ``path``; raise :class:`ConfigError` listing every problem."""
    config, problems = check_config(path, profiles_dir)
    if config is None or problems:
        raise ConfigError(problems)
    return config


def check_config(
    path: Path, profiles_dir: Path | None = None, overlay: Path | None = None
) -> tuple[Config | None, list[Problem]]:
    """Validate ``path`` and the profiles it names; never raises.

    Returns the config and no problems, or None and every problem found.
    ``profiles_dir`` overrides where profiles are looked up (see
    :func:`resolve_profiles_dir`); a profile in ``overlay`` (profile updates
    installed by a signed command) wins over the shipped one of the same name.
    Without ``overlay``, the config's own ``<state_dir>/profiles`` is used
    when it exists, as the agent does: a device whose profile came only as an
    update must check (and start after a restart) as it runs.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, [Problem(str(path), 0, "(file)", f"cannot read config: {reason}")]
    doc, ctx = parse_toml(str(path), data, _absolute(path).parent)
    if doc is None:
        return None, ctx.problems
    top = validate_table(ctx, doc, TOP_FIELDS, ()) or {}
    pdir = resolve_profiles_dir(path, top.get("profiles_dir"), profiles_dir)
    buses = top.get("buses", {})
    models = _installed_models(ctx, top)
    if overlay is None:
        overlay = _profile_updates(ctx, top)
    raw_devices = _validate_devices(ctx, top.get("devices", []), buses)
    devices = _devices(ctx, raw_devices, buses, pdir, overlay, models)
    declared = [d["id"] for d in top.get("devices", []) if isinstance(d, dict) and "id" in d]
    _check_watch(ctx, top.get("anomaly"), devices, [str(i) for i in declared], models)
    if ctx.problems:
        own = str(path)
        return None, sorted(ctx.problems, key=lambda p: (p.file != own, p.file, p.line))
    return _assemble(path, top, buses, devices, pdir), []


def _profile_updates(ctx: Context, top: dict[str, Any]) -> Path | None:
    """``<state_dir>/profiles`` (profiles installed by signed command), if [storage] is good."""
    if ("storage",) in ctx.lines and "storage" not in top:
        return None
    storage = top.get("storage", StorageConfig())
    folder: Path = storage.profile_updates
    try:
        return folder if folder.is_dir() else None
    except OSError:  # a folder this user may not read
        return None


def _installed_models(ctx: Context, top: dict[str, Any]) -> InstalledModels | None:
    """The models this config's agent can load; None if [storage] or [anomaly] is bad."""
    if any((name,) in ctx.lines and name not in top for name in ("storage", "anomaly")):
        return None  # where the agent looks is unknown: its problems are reported
    return InstalledModels.of(
        top.get("storage", StorageConfig()), top.get("anomaly", AnomalyConfig())
    )


def resolve_profiles_dir(
    config_path: Path, configured: Path | None = None, override: Path | None = None
) -> Path:
    """Where profiles are looked up, first match wins.

    ``override`` (e.g. a command-line flag), the config's ``profiles_dir``,
    ``$CITYEDGE_PROFILES``, ``firmware-profiles`` next to the config, the
    source tree's ``firmware-profiles``, the installed ``<prefix>/share/cityedge/
    firmware-profiles``, then ``/usr/share/cityedge/firmware-profiles``.
    """
    for chosen in (override, configured, os.environ.get(PROFILES_ENV) or None):
        if chosen is not None:
            return Path(chosen)
    beside = _absolute(config_path).parent / "firmware-profiles"
    return beside if beside.is_dir() else shipped_profiles_dir()


def shipped_profiles_dir() -> Path:
    """The profiles that come with the agent: source tree, installed prefix, else /usr/share."""
    repo = Path(cityedge.__file__).parent.parent / "firmware-profiles"
    if repo.is_dir():
        return repo
    installed = Path(sys.prefix) / "share" / "cityedge" / "firmware-profiles"
    return installed if installed.is_dir() else SHARED_PROFILES


def _absolute(path: Path) -> Path:
    """Absolute and normalised (``a/../b`` -> ``b``), without following symlinks."""
    return Path(os.path.abspath(path))


def _devices(
    ctx: Context,
    items: list[dict[str, Any] | None],
    buses: dict[str, Any],
    pdir: Path,
    overlay: Path | None = None,
    models: InstalledModels | None = None,
) -> list[DeviceConfig]:
    """Cross-check devices (ids, buses, profiles) and build the valid ones."""
    cache = ProfileCache(models)
    seen: dict[str, int] = {}
    serial_taken: dict[str, int] = {}
    built: list[DeviceConfig] = []
    for n, dev in enumerate(items):
        if dev is None:
            continue
        key: Key = ("devices", n)
        before = len(ctx.problems)
        if "id" in dev:
            if dev["id"] in seen:
                message = f"duplicate device id (first at line {seen[dev['id']]})"
                ctx.report((*key, "id"), message, got=dev["id"])
            seen.setdefault(dev["id"], ctx.line(key))
        bus = _device_bus(ctx, key, dev, buses)
        name = dev.get("profile_name")
        own = overlay if overlay and name and profile_path(overlay, str(name)).is_file() else pdir
        profile = _device_profile(ctx, key, dev, own, cache)
        if profile is not None and bus is not None:
            _check_protocol(ctx, key, bus, profile)
            if bus.get("type") == "serial-sensor":
                _check_serial(ctx, key, dev, profile)
                if dev.get("bus") in serial_taken:
                    line = serial_taken[dev["bus"]]
                    ctx.report((*key, "bus"), f"a serial-sensor bus carries one sensor; "
                               f"this one already has the device at line {line}")  # fmt: skip
                serial_taken.setdefault(str(dev.get("bus")), ctx.line(key))
        if len(ctx.problems) == before and profile is not None and bus is not None:
            built.append(_device(ctx, key, dev, profile))
    return built


def _check_watch(
    ctx: Context,
    anomaly: Any,
    devices: list[DeviceConfig],
    declared: list[str],
    models: InstalledModels | None = None,
) -> None:
    """[anomaly] watch entries name a configured device, a point of its profile and a model.

    A device that is in the file but has problems of its own is not reported
    again here: its own lines say what is wrong with it.
    """
    if not isinstance(anomaly, AnomalyConfig):
        return
    by_id = {d.id: d for d in devices}
    for n, w in enumerate(anomaly.watch):
        key: Key = ("anomaly", "watch", n)
        if models is not None:
            models.check(ctx, (*key, "model"), w.model)
        dev = by_id.get(w.device)
        if dev is None:
            if w.device not in declared:
                allowed = ", ".join(declared) or "none"
                ctx.report((*key, "device"), "unknown device", allowed, w.device)
            continue
        names = dev.profile.point_names()
        if w.point not in names:
            hint = did_you_mean(w.point, names)
            ctx.report((*key, "point"), f"no such point in {dev.profile_name}{hint}",
                       got=w.point)  # fmt: skip


def _check_protocol(ctx: Context, key: Key, bus: dict[str, Any], profile: Any) -> None:
    wanted = BUS_PROTOCOL.get(str(bus.get("type")))
    if wanted is not None and profile.protocol != wanted:
        kind = str(bus.get("type"))
        message = f"{a_or_an(profile.protocol)} profile cannot run on {a_or_an(kind)} bus"
        ctx.report((*key, "profile"), message, f"{a_or_an(wanted)} profile", profile.name)


def _check_serial(ctx: Context, key: Key, dev: dict[str, Any], profile: Any) -> None:
    if dev.get("sensor_mode") == "passive" and profile.codec not in ("pms5003", "sds011"):
        ctx.report((*key, "sensor_mode"), "passive mode is for PMS5003 and SDS011 sensors",
                   "active, or leave it out", "passive")  # fmt: skip


def _validate_devices(
    ctx: Context, raw: list[Any], buses: dict[str, Any]
) -> list[dict[str, Any] | None]:
    """Each device against the common keys plus its bus type's own keys."""
    out: list[dict[str, Any] | None] = []
    entries: list[DeviceEntry] = []
    every = {k: f for fields in DEVICE_OPTIONS.values() for k, f in fields.items()}
    for n, dev in enumerate(raw):
        key: Key = ("devices", n)
        name = dev.get("bus") if isinstance(dev, dict) else None
        bus = buses.get(name) if isinstance(name, str) else None
        kind = str(bus.get("type")) if isinstance(bus, dict) else None
        own = DEVICE_OPTIONS.get(kind, {}) if kind else {}
        # Keys of other bus types: say where they belong; with no known bus, let be.
        elsewhere: dict[str, str | None] = {
            k: (f"only for devices on {_types_with(k)} buses" if kind else None)
            for k in every
            if k not in own
        }
        fields = {**DEVICE_FIELDS, **own}
        values = validate_table(ctx, dev, fields, key, elsewhere)
        if values is not None and kind is not None:
            device_post(ctx, kind, key, values)
            entries.append((key, str(name), kind, values))
        out.append(values)
    check_radio_ids(ctx, entries)
    return out


def _types_with(name: str) -> str:
    return " or ".join(t for t, fields in DEVICE_OPTIONS.items() if name in fields)


def _device_bus(
    ctx: Context, key: Key, dev: dict[str, Any], buses: dict[str, Any]
) -> dict[str, Any] | None:
    name = dev.get("bus")
    if name is None:
        return None
    bus = buses.get(name)
    if name not in buses:
        hint = did_you_mean(name, buses)
        allowed = ", ".join(buses) or "none: declare one as [buses.NAME]"
        ctx.report((*key, "bus"), f"unknown bus{hint}", allowed, name)
        return None
    return bus


def _device_profile(
    ctx: Context, key: Key, dev: dict[str, Any], pdir: Path, cache: ProfileCache
) -> Any:
    name = dev.get("profile_name")
    if name is None:
        return None
    if not profile_path(pdir, name).is_file():
        known = available_profiles(pdir)
        hint = did_you_mean(name, known)
        message = f"unknown profile: no file {profile_path(pdir, name)}{hint}"
        shipped = shipped_profiles_dir()
        if shipped != pdir and profile_path(shipped, name).is_file():
            message += f"; the shipped {shipped} has it, but only the first profiles folder found"
            message += " is searched: see Paths in docs/config.md"
        allowed = None if hint else ", ".join(known) or f"none found in {pdir}"
        ctx.report((*key, "profile"), message, allowed)
        return None
    profile, problems = cache.check(pdir, name)
    for problem in problems:
        if problem not in ctx.problems:  # a profile shared by devices: report once
            ctx.problems.append(problem)
    return profile


_DEVICE_ATTRS = {f.name for f in dataclasses.fields(DeviceConfig)}
_BUS_ATTRS = {f.name for f in dataclasses.fields(BusConfig)}


def _device(ctx: Context, key: Key, dev: dict[str, Any], profile: Any) -> DeviceConfig:
    values = dict(dev)
    location = values.pop("location", None)
    if location is not None and location is not INVALID:
        values |= location
    known = {k: v for k, v in values.items() if k in _DEVICE_ATTRS}
    options = {k: v for k, v in values.items() if k not in _DEVICE_ATTRS}
    return DeviceConfig(profile=profile, line=ctx.line(key), options=options, **known)


# Keys a bus type reads from its options although BusConfig has a field of that
# name for Modbus (whose default, 502, would hide that the key was not set).
_OPTION_KEYS = {"lorawan-udp": {"port"}, "chirpstack-mqtt": {"port"}}


def _bus_config(values: dict[str, Any]) -> BusConfig:
    own = _OPTION_KEYS.get(str(values.get("type")), set())
    known = {k: v for k, v in values.items() if k in _BUS_ATTRS and k not in own}
    options = {k: v for k, v in values.items() if k not in _BUS_ATTRS or k in own}
    return BusConfig(options=options, **known)


def _assemble(
    path: Path,
    top: dict[str, Any],
    buses: dict[str, Any],
    devices: list[DeviceConfig],
    pdir: Path,
) -> Config:
    known = {f.name for f in dataclasses.fields(Config)}
    extra = {k: v for k, v in top.items() if k not in known}
    return Config(
        source=_absolute(path),
        site=top["site"],
        buses={name: _bus_config(values) for name, values in buses.items()},
        devices=devices,
        uplink=top.get("uplink", UplinkConfig()),
        storage=top.get("storage", StorageConfig()),
        alerts=top.get("alerts", AlertsConfig()),
        signing=top.get("signing", SigningConfig()),
        downlink=top.get("downlink", DownlinkConfig()),
        metrics=top.get("metrics", MetricsConfig()),
        health=top.get("health", HealthConfig()),
        anomaly=top.get("anomaly", AnomalyConfig()),
        profiles_dir=pdir,
        log_level=top.get("log_level", "info"),
        extra=extra,
    )
