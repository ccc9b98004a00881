"""Loading and validating the gateway's TOML configuration."""

from cityedge.config.model import (
    BusConfig,
    Config,
    DeviceConfig,
    SiteConfig,
    StorageConfig,
    TlsConfig,
    UplinkConfig,
)

__all__ = [
    "BusConfig",
    "Config",
    "DeviceConfig",
    "SiteConfig",
    "StorageConfig",
    "TlsConfig",
    "UplinkConfig",
]
