"""One scenario per module; each provides NAME, TITLE, steps(quick), run(ctx, result), plot().

Order matters only for reading the output: the baseline first, then what is compared with it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ORDER = [
    "mosquitto_baseline",
    "connections",
    "mass_disconnect",
    "amqtt",
    "e2e_latency",
    "realpath",
    "fallback",
    "polling",
]


def load(name: str) -> ModuleType:
    if name not in ORDER:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(ORDER)}")
    return importlib.import_module(f"bench.scenarios.{name}")
