"""Requests per poll cycle, coalesced vs one request per point, for every profile.

python benchmarks/bench_modbus_coalescing.py [firmware-profiles]
"""

from __future__ import annotations

import sys
from pathlib import Path

from cityedge.config.profile_loader import available_profiles, load_profile
from cityedge.drivers.modbus.plan import plan_reads


def main() -> None:
    pdir = Path(sys.argv[1] if len(sys.argv) > 1 else "firmware-profiles")
    head = ("profile", "points", "per-point", "coalesced", "words read", "saved")
    print("{:<24} {:>6} {:>9} {:>9} {:>10} {:>6}".format(*head))
    for name in available_profiles(pdir):
        prof = load_profile(pdir, name)
        plan = plan_reads(
            prof.points, prof.max_registers, prof.max_bits, prof.max_gap, prof.unreadable
        )
        words = sum(r.count for r in plan)
        n = len(prof.points)
        saved = 1 - len(plan) / n if n else 0.0
        print(f"{name:<24} {n:>6} {n:>9} {len(plan):>9} {words:>10} {saved:>6.0%}")


if __name__ == "__main__":
    main()
