"""The validated configuration, as plain frozen dataclasses.

Nothing here parses or validates: :mod:`cityedge.config.loader` turns a TOML
file into these objects or raises :class:`cityedge.errors.ConfigError`.
Defaults live here so the loader, the docs and the example agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cityedge.profiles import Profile

BusType = Literal[
    "modbus-tcp", "modbus-rtu", "opcua", "serial-sensor", "lorawan-udp", "chirpstack-mqtt", "ble"
]


@dataclass(frozen=True, slots=True)
class SiteConfig:
    id: str
    gateway_id: str
    latitude: float
    longitude: float
    cell_size_m: int = 500


@dataclass(frozen=True, slots=True)
class BusConfig:
    """A field bus. TCP fields are used by modbus-tcp, serial ones by modbus-rtu."""

    name: str
    type: BusType
    # modbus-tcp
    host: str = "127.0.0.1"
    port: int = 502
    max_in_flight: int = 1
    # modbus-rtu
    device: str = ""
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    bytesize: int = 8
    # both
    timeout_s: float = 1.0
    # Extra silence between frames on top of the 3.5 character times the
    # Modbus RTU spec requires; some RS-485 converters need a little more.
    inter_frame_gap_s: float = 0.0
    # The other bus types' own keys (cityedge.config.driver_specs), validated.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str
    bus: str
    profile_name: str
    profile: Profile
    unit_id: int = 0  # Modbus only (required there)
    poll_interval_s: float = 1.0
    timeout_s: float | None = None  # None: the bus's timeout
    retries: int = 2
    backoff_max_s: float = 60.0
    max_gap: int | None = None  # None: the profile's coalescing fill
    latitude: float | None = None
    longitude: float | None = None
    line: int = 0  # where the device is declared, for messages
    # The device's protocol keys (LoRaWAN keys, BLE MAC...), validated.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    broker: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["mqtt5", "mqtt311"] = "mqtt5"
    client_id: str = ""  # empty: the gateway id
    topic_prefix: str = "cityedge"
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    tls: TlsConfig | None = None
    batch_max_readings: int = 500
    batch_max_bytes: int = 64 * 1024
    batch_max_age_s: float = 1.0
    max_inflight_batches: int = 8
    # Share of the uplink given to backlog batches while live data is also
    # waiting; live data always gets the rest.
    backlog_share: float = 0.5
    # A reading older than this (since it was accepted) counts as backlog.
    live_window_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 120.0


DropPolicy = Literal["oldest-routine-first"]
Durability = Literal["full", "normal"]


@dataclass(frozen=True, slots=True)
class StorageConfig:
    path: Path = Path("/var/lib/cityedge/outbox.sqlite")
    max_bytes: int = 256 * 1024 * 1024
    drop_policy: DropPolicy = "oldest-routine-first"
    # full: fsync every commit (survives power loss); normal: survives a
    # process crash, may lose the last commits on power loss.
    durability: Durability = "full"
    state_dir: Path | None = None  # None: the folder of path

    @property
    def state_root(self) -> Path:
        """Where the agent's small state lives: ``state_dir``, else the outbox's folder."""
        return self.state_dir or self.path.parent

    @property
    def profile_updates(self) -> Path:
        """Profiles installed by signed command; they win over the shipped ones."""
        return self.state_root / "profiles"


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """Uplink batches signed by the signer daemon (docs/security.md)."""

    enabled: bool = True
    socket: Path = Path("/run/cityedge-signer/signer.sock")
    timeout_s: float = 2.0


@dataclass(frozen=True, slots=True)
class DownlinkConfig:
    """Who may command this gateway: commands must be signed by one of these keys."""

    authority_keys: tuple[str, ...] = ()  # "<algorithm> <base64>" lines
    window_s: float = 300.0  # a command's timestamp must be this fresh


@dataclass(frozen=True, slots=True)
class WatchConfig:
    device: str
    point: str
    model: str = "block_novelty"


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    tick_s: float = 1.0  # scores computed once per tick, batched across streams
    model_dir: Path | None = None  # None: the shipped models
    watch: tuple[WatchConfig, ...] = ()  # beyond the points profiles name a model for


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str | None = None  # "127.0.0.1:9108"; None: no metrics endpoint


@dataclass(frozen=True, slots=True)
class HealthConfig:
    every_s: float = 3600.0  # the periodic health message


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    resend_s: float = 300.0  # an unacknowledged alert goes again this often


@dataclass(frozen=True, slots=True)
class Config:
    source: Path
    site: SiteConfig
    buses: dict[str, BusConfig]
    devices: list[DeviceConfig]
    uplink: UplinkConfig
    storage: StorageConfig
    profiles_dir: Path
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    downlink: DownlinkConfig = field(default_factory=DownlinkConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    log_level: str = "info"
    extra: dict[str, object] = field(default_factory=dict)
