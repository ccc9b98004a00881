"""Shared bits of the benchmarks: realistic readings and machine facts."""

from __future__ import annotations

import os
import platform
import random
from datetime import UTC, datetime

from cityedge.readings import Reading

POINTS = [
    ("voltage_l1", "V", 230.0),
    ("voltage_l2", "V", 230.0),
    ("voltage_l3", "V", 230.0),
    ("current_l1", "A", 12.0),
    ("current_l2", "A", 11.0),
    ("current_l3", "A", 13.0),
    ("active_power_total", "W", 8200.0),
    ("power_factor_total", "1", 0.97),
    ("frequency", "Hz", 50.0),
    ("import_active_energy", "kWh", 123456.0),
]


def readings(n: int, devices: int = 100, seed: int = 1) -> list[Reading]:
    """n readings spread over `devices` meters, values jittering like a meter's."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        name, unit, base = POINTS[i % len(POINTS)]
        dev = f"meter-{(i // len(POINTS)) % devices:03d}"
        value = round(base * (1 + rng.gauss(0, 0.01)), 3)
        cell = "33N_500_389500_5819500"
        out.append(Reading(dev, name, value, unit, now, family="energy", cell=cell))
    return out


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
