"""Answers to device MAC requests (LinkCheckReq, DeviceTimeReq): the pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityedge.drivers.lorawan import mac, phy

RECEIVED = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("snr", "datr", "margin"),
    [
        (7.5, "SF7BW125", 15),  # 7.5 dB above SF7's floor of -7.5 dB
        (-20.0, "SF12BW125", 0),  # right at SF12's floor
        (-25.0, "SF12BW125", 0),  # below it: no negative margins
        (-9.0, "SF9BW125", 3),
        (300.0, "SF7BW125", 254),  # the field's ceiling
        (None, "SF7BW125", 0),  # no SNR reported
        (5.0, 50000, 0),  # FSK: no LoRa floor
        (5.0, "SF6BW125", 0),  # not a LoRaWAN data rate
    ],
)
def test_link_margin_is_snr_above_the_spreading_factors_floor(
    snr: float | None, datr: str | int, margin: int
) -> None:
    assert mac.margin_db(snr, datr) == margin


def test_gps_time_counts_from_1980_with_the_leap_seconds() -> None:
    """2020-01-01T00:00:00Z is GPS second 1261872018 (14605 days and 18 leap seconds)."""
    assert mac.gps_time(RECEIVED) == (1261872018, 0)
    assert mac.gps_time(RECEIVED + timedelta(milliseconds=500)) == (1261872018, 128)


def test_both_requests_answered_once_each_in_fopts() -> None:
    link, time = phy.MacCommand("LinkCheckReq", b""), phy.MacCommand("DeviceTimeReq", b"")
    asked = [link, time, link, phy.MacCommand("DevStatusAns", bytes((0x73, 0x07)))]
    fopts, skipped = mac.answers(
        asked, snr=7.5, datr="SF7BW125", gateways=2, received=RECEIVED, clock_ok=True
    )
    assert skipped == []
    got = phy.parse_mac_commands(fopts, uplink=False)
    assert got.unparsed == 0
    assert [c.name for c in got.commands] == ["LinkCheckAns", "DeviceTimeAns"]
    assert got.commands[0].payload == bytes((15, 2))
    seconds = int.from_bytes(got.commands[1].payload[:4], "little")
    assert (seconds, got.commands[1].payload[4]) == (1261872018, 0)


def test_device_time_is_not_answered_while_the_clock_is_unsynced() -> None:
    fopts, skipped = mac.answers(
        [phy.MacCommand("DeviceTimeReq", b"")],
        snr=1.0, datr="SF9BW125", gateways=1, received=RECEIVED, clock_ok=False,
    )  # fmt: skip
    assert fopts == b"" and skipped == ["device_time_clock_unsynced"]


def test_the_gateways_gps_time_is_used_when_it_has_one() -> None:
    """rxpk tmms (ms since the GPS epoch) is the best reception time: used even while
    this box's clock is unsynced."""
    fopts, skipped = mac.answers(
        [phy.MacCommand("DeviceTimeReq", b"")],
        snr=1.0, datr="SF9BW125", gateways=1, received=RECEIVED, clock_ok=False,
        gps_ms=1261872018_500,
    )  # fmt: skip
    assert skipped == []
    (ans,) = phy.parse_mac_commands(fopts, uplink=False).commands
    assert int.from_bytes(ans.payload[:4], "little") == 1261872018 and ans.payload[4] == 128


@given(
    snr=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32)),
    datr=st.one_of(st.text(max_size=12), st.integers()),
    gateways=st.integers(-5, 1000),
)
def test_any_radio_metadata_gives_a_valid_link_check_answer(
    snr: float | None, datr: str | int, gateways: int
) -> None:
    ans = mac.link_check_ans(snr, datr, gateways)
    assert len(ans) == 3 and ans[0] == 0x02 and 0 <= ans[1] <= 254
