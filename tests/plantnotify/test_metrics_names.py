"""docs/metrics.md, the alert rules and the code name the same metrics: none can drift."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from prometheus_client import REGISTRY, Metric

from api.metrics import ApiMetrics
from plantnotify.broker.metrics import BrokerMetrics
from plantnotify.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _documented_name(family: Metric) -> str:
    return family.name + ("_total" if family.type == "counter" else "")


def exported() -> dict[str, Metric]:
    """Every plantnotify_* family the parts export, by the name a dashboard uses."""
    for module in ("worker.metrics", "bridge.metrics"):  # module-level, default registry
        importlib.import_module(module)
    families = list(REGISTRY.collect())
    families += list(ApiMetrics().registry.collect())
    families += list(BrokerMetrics(load_settings(), "127.0.0.1", 1).collect())
    return {_documented_name(f): f for f in families if f.name.startswith("plantnotify_")}


def test_docs_list_exactly_the_exported_metrics() -> None:
    documented = set(
        re.findall(r"^\| `(plantnotify_\w+)` \|", (ROOT / "docs/metrics.md").read_text(), re.M)
    )
    names = set(exported())
    assert names - documented == set(), "exported but not in docs/metrics.md"
    assert documented - names == set(), "in docs/metrics.md but not exported"


def test_alert_rules_use_only_exported_metrics() -> None:
    series = {
        family.name + suffix
        for family in exported().values()
        for suffix in SUFFIXES.get(family.type, ("",))
    }
    used = set(re.findall(r"\bplantnotify_\w+", (ROOT / "ops/prometheus/alerts.yml").read_text()))
    assert used, "no plantnotify metric in the alert rules"
    assert used <= series, f"alert rules use unknown metrics: {sorted(used - series)}"
