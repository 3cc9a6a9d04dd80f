"""What a run produces: one result per scenario, the machine, the targets; written as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ScenarioResult:
    name: str
    title: str
    status: str = "ok"  # ok | error
    error: str | None = None
    seconds: float = 0.0
    # Headline numbers (flat, JSON-friendly); the targets read these.
    metrics: dict[str, Any] = field(default_factory=dict)
    # Whole distributions and per-step tables, for plots and for anyone re-analysing.
    series: dict[str, Any] = field(default_factory=dict)
    # How it was measured, and anything that limits what the numbers mean.
    notes: list[str] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    # (step, seconds since the scenario started) as reported to the progress bar.
    timeline: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class TargetResult:
    id: str
    description: str
    measured: str
    target: str
    status: str  # met | missed | not measured
    why: str = ""


@dataclass
class Report:
    started_at: str
    quick: bool
    machine: dict[str, Any]
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)
    targets: list[TargetResult] = field(default_factory=list)
    finished_at: str | None = None
    seconds: float = 0.0
    load: dict[str, Any] = field(default_factory=dict)

    def metric(self, scenario: str, key: str) -> Any:
        result = self.scenarios.get(scenario)
        if result is None or result.status != "ok":
            return None
        return result.metrics.get(key)

    def to_json(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = _clean(asdict(self))
        return cleaned

    def write(self, out_dir: Path, stamp: str) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=1, sort_keys=False)
        paths = [out_dir / f"bench-{stamp}.json", out_dir / "latest.json"]
        for path in paths:
            path.write_text(text + "\n")
        return paths


def _clean(value: Any) -> Any:
    """NaN and infinities are not JSON; they become null."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
