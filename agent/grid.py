"""The city's 500 m grid: square cells on UTM (WGS 84).

Cell id format: ``<zone><hemisphere>_<size>_<easting>_<northing>``, for example
``33N_500_389500_5819000``: UTM zone 33, northern hemisphere, 500 m cells, the
cell whose south-west corner is at easting 389500 m, northing 5819000 m (false
easting 500 km; false northing 10 000 km in the south, as UTM defines).
Each zone has its own grid; cells do not straddle a zone boundary.

The projection is the Krüger series to third order in n (accurate to well
under a millimetre within a UTM zone), which is all a cell index needs.
"""

from __future__ import annotations

import math

_A = 6378137.0
_F = 1 / 298.257223563
_K0 = 0.9996
_N = _F / (2 - _F)
_RECT = _A / (1 + _N) * (1 + _N**2 / 4 + _N**4 / 64)
_ALPHA = (
    _N / 2 - 2 * _N**2 / 3 + 5 * _N**3 / 16,
    13 * _N**2 / 48 - 3 * _N**3 / 5,
    61 * _N**3 / 240,
)
_E2N = 2 * math.sqrt(_N) / (1 + _N)


def utm_zone(lat: float, lon: float) -> int:
    """UTM zone number, with the Norway and Svalbard exceptions."""
    lon = ((lon + 180.0) % 360.0) - 180.0
    zone = int((lon + 180.0) // 6.0) + 1
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        return 32
    if 72.0 <= lat < 84.0 and lon >= 0.0:
        if lon < 9.0:
            return 31
        if lon < 21.0:
            return 33
        if lon < 33.0:
            return 35
        if lon < 42.0:
            return 37
    return min(zone, 60)


def to_utm(lat: float, lon: float) -> tuple[int, str, float, float]:
    """(zone, hemisphere 'N'|'S', easting m, northing m) of a WGS 84 position."""
    if not (-80.0 <= lat <= 84.0):
        raise ValueError(f"latitude {lat} is outside UTM's range -80..84")
    if not (-180.0 <= lon <= 180.0):
        raise ValueError(f"longitude {lon} is outside -180..180")
    zone = utm_zone(lat, lon)
    lon0 = math.radians((zone - 1) * 6 - 180 + 3)
    phi = math.radians(lat)
    dlam = math.radians(lon) - lon0
    t = math.sinh(math.atanh(math.sin(phi)) - _E2N * math.atanh(_E2N * math.sin(phi)))
    xi = math.atan2(t, math.cos(dlam))
    eta = math.atanh(math.sin(dlam) / math.sqrt(1 + t * t))
    e, n = eta, xi
    for j, alpha in enumerate(_ALPHA, start=1):
        e += alpha * math.cos(2 * j * xi) * math.sinh(2 * j * eta)
        n += alpha * math.sin(2 * j * xi) * math.cosh(2 * j * eta)
    easting = 500000.0 + _K0 * _RECT * e
    northing = _K0 * _RECT * n
    hemisphere = "N" if lat >= 0 else "S"
    if hemisphere == "S":
        northing += 10000000.0
    return zone, hemisphere, easting, northing


def cell_id(lat: float, lon: float, size_m: int = 500) -> str:
    """The id of the grid cell holding a position (see the module doc)."""
    if size_m <= 0:
        raise ValueError("cell size must be positive")
    zone, hemisphere, easting, northing = to_utm(lat, lon)
    e0 = int(easting // size_m) * size_m
    n0 = int(northing // size_m) * size_m
    return f"{zone:02d}{hemisphere}_{size_m}_{e0}_{n0}"
