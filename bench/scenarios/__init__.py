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
    "engines",
    "e2e_latency",
    "realpath",
    "sustained",
    "fallback",
    "polling",
]


# Run only when named (``--scenario soak``): too long for the default run.
OPT_IN = ["soak", "chaos"]


def load(name: str) -> ModuleType:
    if name not in ORDER + OPT_IN:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(ORDER + OPT_IN)}")
    return importlib.import_module(f"bench.scenarios.{name}")
