"""Read coalescing: expected plans and properties over random profiles."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from cityedge.drivers.modbus.plan import extract, plan_reads
from cityedge.profiles import WORDS, AddressRange, Point


def test_merges_small_holes_and_splits_large_ones() -> None:
    """Holes up to max_gap are bridged, larger ones start a new request."""
    points = [
        Point("a", "input", 0, "float32"),
        Point("b", "input", 10, "float32"),  # hole 8: bridged
        Point("c", "input", 21, "uint16"),  # hole 9: split
        Point("d", "coil", 0, "bool"),
        Point("e", "coil", 100, "bool"),
    ]
    plan = [(r.register, r.start, r.count) for r in plan_reads(points, max_gap=8)]
    assert plan == [("coil", 0, 1), ("coil", 100, 1), ("input", 0, 12), ("input", 21, 1)]


def test_respects_limit_and_unreadable_ranges() -> None:
    """A request never exceeds max_registers nor spans an unreadable range."""
    points = [Point(f"p{i}", "holding", 2 * i, "uint32") for i in range(10)]
    plan = plan_reads(points, max_registers=8, max_gap=8)
    assert [(r.start, r.count) for r in plan] == [(0, 8), (8, 8), (16, 4)]
    pair = [Point("x", "holding", 0, "uint16"), Point("y", "holding", 5, "uint16")]
    assert [(r.start, r.count) for r in plan_reads(pair)] == [(0, 6)]
    blocked = plan_reads(pair, unreadable=(AddressRange("holding", 3, 3),))
    assert [(r.start, r.count) for r in blocked] == [(0, 1), (5, 1)]


def test_bitfields_share_a_register() -> None:
    """Bitfields of one register ride in the same request and slice the same word."""
    points = [
        Point("lo", "holding", 3, "bitfield", bits=(0, 3)),
        Point("hi", "holding", 3, "bitfield", bits=(4, 7)),
    ]
    (req,) = plan_reads(points)
    assert (req.start, req.count) == (3, 1)
    assert [w for _p, w in extract(req, [0x21])] == [[0x21], [0x21]]


def _points(draw: st.DrawFn) -> list[Point]:
    points: list[Point] = []
    for register in ("holding", "input", "coil"):
        address = draw(st.integers(0, 20))
        for i in range(draw(st.integers(0, 12))):
            kind = "bool" if register == "coil" else draw(st.sampled_from(sorted(WORDS)))
            p = Point(f"{register}{i}", register, address, kind)  # type: ignore[arg-type]
            points.append(p)
            address = p.end + draw(st.integers(0, 20))
    return points


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[Point], int, int, int, list[AddressRange]]:
    points = _points(draw)
    used = {(p.register, a) for p in points for a in range(p.address, p.end)}
    holes = []
    for register in ("holding", "input", "coil"):
        for start in draw(st.lists(st.integers(0, 300), max_size=4)):
            end = start + draw(st.integers(0, 3))
            if not any((register, a) in used for a in range(start, end + 1)):
                holes.append(AddressRange(register, start, end))  # type: ignore[arg-type]
    return (
        points,
        draw(st.integers(4, 125)),
        draw(st.integers(1, 64)),
        draw(st.integers(0, 16)),
        holes,
    )


@given(plans())
def test_plan_properties(case: tuple[list[Point], int, int, int, list[AddressRange]]) -> None:
    """Every point is read exactly once, within limits, never touching an unreadable address."""
    points, max_registers, max_bits, max_gap, unreadable = case
    plan = plan_reads(points, max_registers, max_bits, max_gap, unreadable)
    served = [p.name for r in plan for p in r.points]
    assert sorted(served) == sorted(p.name for p in points)
    for r in plan:
        limit = max_bits if r.register == "coil" else max_registers
        assert r.count <= limit
        assert all(r.start <= p.address and p.end <= r.end for p in r.points)
        for u in unreadable:
            assert u.register != r.register or u.end < r.start or u.start >= r.end
    # Fewest: two neighbouring requests of one type could not have been merged.
    for a, b in itertools.pairwise(plan):
        if a.register == b.register:
            merged_ok = (
                b.start - a.end <= max_gap
                and b.end - a.start <= (max_bits if a.register == "coil" else max_registers)
                and not any(
                    u.register == a.register and u.start < b.end and a.start <= u.end
                    for u in unreadable
                )
            )
            assert not merged_ok
