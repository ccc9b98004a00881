"""UTM projection and grid cell ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityedge.grid import cell_id, to_utm

# Reference coordinates computed with PROJ (pyproj, EPSG:326xx / 327xx).
PROJ_REFERENCE = [
    (52.5163, 13.3777, 33, "N", 389917.833, 5819701.919),
    (-33.8568, 151.2153, 56, "S", 334900.570, 6252288.753),
    (0.0, 3.0, 31, "N", 500000.000, 0.000),
    (48.8584, 2.2945, 31, "N", 448252.001, 5411954.910),
    (60.0, 5.0, 32, "N", 276979.926, 6658157.202),  # Norway exception
    (-0.0001, -0.0001, 30, "S", 833967.414, 9999988.932),
    (78.2232, 15.6267, 33, "N", 514278.715, 8683355.469),  # Svalbard exception
    (40.7484, -73.9857, 18, "N", 585628.409, 4511322.447),
]


@pytest.mark.parametrize(("lat", "lon", "zone", "hem", "east", "north"), PROJ_REFERENCE)
def test_to_utm_matches_proj(
    lat: float, lon: float, zone: int, hem: str, east: float, north: float
) -> None:
    """UTM coordinates agree with PROJ to within 2 mm."""
    z, h, e, n = to_utm(lat, lon)
    assert (z, h) == (zone, hem)
    assert e == pytest.approx(east, abs=2e-3)
    assert n == pytest.approx(north, abs=2e-3)


def test_cell_id_format() -> None:
    """A cell id names zone, hemisphere, size and the south-west corner."""
    assert cell_id(52.5163, 13.3777) == "33N_500_389500_5819500"
    assert cell_id(52.5163, 13.3777, 1000) == "33N_1000_389000_5819000"


def test_neighbouring_points_share_or_split_cells() -> None:
    """Points 100 m apart in one cell share it; 600 m apart they do not."""
    base = cell_id(52.5163, 13.3777)
    assert cell_id(52.5163, 13.3777 + 0.0001) == base
    assert cell_id(52.5163 + 0.0054, 13.3777) != base


@given(
    st.floats(min_value=-80, max_value=84, allow_nan=False),
    st.floats(min_value=-180, max_value=180, allow_nan=False),
)
def test_cell_contains_point(lat: float, lon: float) -> None:
    """The point always lies inside the cell its id names."""
    zone, hem, e, n = to_utm(lat, lon)
    z, size, e0, n0 = cell_id(lat, lon).split("_")
    assert z == f"{zone:02d}{hem}"
    assert int(e0) <= e < int(e0) + int(size)
    assert int(n0) <= n < int(n0) + int(size)


def test_out_of_range_is_refused() -> None:
    """Positions outside UTM's latitude band are refused with a clear error."""
    with pytest.raises(ValueError, match="outside UTM"):
        cell_id(85.0, 0.0)
