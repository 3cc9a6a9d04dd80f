"""ops/grafana: the dashboard loads, every query is valid PromQL (promtool) and names only
metrics the services export (or Prometheus' own ALERTS), and the provisioning points at it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import ROOT
from tests.deploy.test_alerts import promtool
from tests.plantnotify.test_metrics_names import SUFFIXES, exported

GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "plantnotify.json"
# Series Prometheus makes itself; a dashboard may read them.
BUILTIN_SERIES = {"ALERTS"}
# What the seed plan asks the dashboard to show, as the metric each needs.
REQUIRED = {
    "connections": "plantnotify_mqtt_live_connections",
    "connection failures": "plantnotify_mqtt_connects_total",
    "delivery rate": "plantnotify_bridge_decisions_total",
    "completion to device latency": "plantnotify_delivery_latency_seconds_bucket",
    "outbox lag": "plantnotify_outbox_lag_seconds",
    "pushes by result": "plantnotify_bridge_pushes_total",
    "alerts firing": "ALERTS",
}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        if panel.get("type") != "row"
        for target in panel.get("targets", [])
    ]


def test_dashboard_is_a_grafana_dashboard() -> None:
    doc = dashboard()
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 36
    panels = [p for p in doc["panels"] if p.get("type") != "row"]
    assert len(panels) >= len(REQUIRED)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == _datasource_uid()
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_names_only_exported_metrics() -> None:
    series = {
        family.name + suffix
        for family in exported().values()
        for suffix in SUFFIXES.get(family.type, ("",))
    } | BUILTIN_SERIES
    used: set[str] = set()
    for title, expr in queries():
        names = set(re.findall(r"\b(plantnotify_\w+|ALERTS)\b", expr))
        assert names, f"{title}: the query reads no metric: {expr}"
        assert names <= series, f"{title}: unknown metrics {sorted(names - series)}"
        used |= names
    missing = {what: name for what, name in REQUIRED.items() if name not in used}
    assert not missing, f"the dashboard does not show: {missing}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses expressions when it checks recording rules: one rule per query.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_title, expr) in enumerate(queries())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", "dashboard.rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _datasource_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus"
    uid: str = source["uid"]
    return uid


@pytest.mark.parametrize("service", ["grafana"])
def test_compose_provisions_the_dashboard(service: str) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"][service]
    assert grafana["profiles"] == ["monitoring"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "plantnotify.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == mounts["./ops/grafana/dashboards"]
