"""cityedge scan: Modbus RTU unit ids found on a pty pair against a pymodbus RTU server."""

from __future__ import annotations

import pytest

from cityedge.errors import TransientError
from cityedge.profiles import Point
from cityedge.scan import parse_units, render_scan, scan_rtu
from cityedge.sim.modbus_sim import ModbusSim
from tests.peers.modbus import async_test, make_profile
from tests.peers.pty import pty_link

PROFILE = make_profile([Point("temperature", "holding", 0, "int16", unit="Cel")])


@async_test
async def test_scan_finds_exactly_the_answering_units() -> None:
    """Units 3 and 17 answer (17 with an exception reply); the scan reports exactly those."""
    async with pty_link() as link:
        sim = ModbusSim({3: PROFILE, 17: PROFILE}, serial_port=link.a, baudrate=19200)
        sim.fail(17, "holding", 0, code=2)
        seen: list[tuple[int, int, int, int]] = []
        async with sim:
            result = await scan_rtu(
                link.b, units=range(1, 25), baudrates=(19200,), timeout_s=0.05,
                progress=lambda *a: seen.append(a),
            )  # fmt: skip
    assert result.units() == [3, 17]
    by_unit = {h.unit_id: h for h in result.hits}
    assert by_unit[3].answer == "registers" and isinstance(by_unit[3].value, int)
    assert by_unit[17].answer == "exception" and by_unit[17].code == 2
    assert [s[0] for s in seen] == list(range(1, 25)) and seen[-1] == (24, 24, 19200, 24)
    assert result.probes == 24
    text = render_scan(result)
    assert "unit   3" in text and "unit  17" in text and "exception 2" in text
    assert result.as_dict()["found"][0]["unit_id"] == 3


@async_test
async def test_scan_of_a_missing_port_fails_clearly() -> None:
    """A port that does not exist raises TransientError naming it."""
    with pytest.raises(TransientError, match="/dev/ttyNOPE"):
        await scan_rtu("/dev/ttyNOPE", units=[1], baudrates=(9600,))


def test_parse_units() -> None:
    """Unit id lists: numbers and ranges within 1..247."""
    assert parse_units("1-3,17, 5") == [1, 2, 3, 5, 17]
    assert parse_units("247") == [247]
    for bad in ("0", "248", "5-3", "a", "", "1-x"):
        with pytest.raises(ValueError):
            parse_units(bad)
