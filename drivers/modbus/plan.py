"""Read coalescing: the fewest requests that cover a device's points. Pure.

Points of one register type are sorted by address and packed greedily: a
point joins the current request when the hole before it is at most
``max_gap`` addresses, the request stays within the per-request limit and
it would not cover an unreadable address. Every constraint holds for any
part of a feasible request too, so the greedy packing is also the one with
the fewest requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cityedge.drivers.base import DecodeError
from cityedge.profiles import BIT_REGISTERS, REGISTER_TYPES, AddressRange, Point, RegisterType

FUNCTION_CODES: dict[str, int] = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` addresses of one register type from ``start``."""

    register: RegisterType
    start: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.start + self.count

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.register]


def _blocked(register: str, start: int, end: int, unreadable: Sequence[AddressRange]) -> bool:
    """Whether [start, end) touches an unreadable range of ``register``."""
    return any(r.register == register and r.start < end and start <= r.end for r in unreadable)


def _pack(
    register: RegisterType,
    points: list[Point],
    limit: int,
    max_gap: int,
    unreadable: Sequence[AddressRange],
) -> list[ReadRequest]:
    requests: list[ReadRequest] = []
    group: list[Point] = []
    start = end = 0
    for point in points:
        new_end = max(end, point.end)
        fits = (
            group
            and point.address - end <= max_gap
            and new_end - start <= limit
            and not _blocked(register, start, new_end, unreadable)
        )
        if fits:
            group.append(point)
            end = new_end
            continue
        if group:
            requests.append(ReadRequest(register, start, end - start, tuple(group)))
        group, start, end = [point], point.address, point.end
    if group:
        requests.append(ReadRequest(register, start, end - start, tuple(group)))
    return requests


def plan_reads(
    points: Iterable[Point],
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 8,
    unreadable: Sequence[AddressRange] = (),
) -> list[ReadRequest]:
    """Coalesce ``points`` into read requests, grouped by register type."""
    by_type: dict[str, list[Point]] = {r: [] for r in REGISTER_TYPES}
    for point in points:
        by_type[point.register].append(point)
    requests: list[ReadRequest] = []
    for register in REGISTER_TYPES:
        group = sorted(by_type[register], key=lambda p: (p.address, p.end))
        limit = max_bits if register in BIT_REGISTERS else max_registers
        requests.extend(_pack(register, group, limit, max_gap, unreadable))
    return requests


def extract(request: ReadRequest, values: Sequence[int]) -> list[tuple[Point, Sequence[int]]]:
    """Each point of ``request`` with its slice of the response ``values``.

    Raises :class:`DecodeError` when the response is shorter than asked for
    (a bit response may be longer: it is padded to whole bytes).
    """
    if len(values) < request.count:
        raise DecodeError("short_response", f"{len(values)} < {request.count}")
    return [(p, values[p.address - request.start : p.end - request.start]) for p in request.points]
