"""Every metric docs/metrics.md lists for a part is served by that running part, on the port
Prometheus scrapes, and the full run's traffic shows up in it."""

from __future__ import annotations

import re

from tests.deploy.conftest import StackRun, sample_value
from tests.deploy.support import ROOT

SECTIONS = {"API": "api", "Worker": "worker", "Bridge": "bridge", "Broker": "broker"}


def documented() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    part = None
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        if line.startswith("## "):
            part = SECTIONS.get(line[3:].strip())
        elif part and (match := re.match(r"^\| `(plantnotify_\w+)` \|", line)):
            out.setdefault(part, []).append(match.group(1))
    return out


def value(text: str, sample: str) -> float:
    found = sample_value(text, sample)
    assert found >= 0, f"{sample} not served"
    return found


def test_documented_metrics_are_served_by_each_running_part(stack_run: StackRun) -> None:
    docs = documented()
    assert set(docs) == set(SECTIONS.values())
    for part, names in docs.items():
        served = stack_run.metrics[part]
        for name in names:
            base = name.removesuffix("_total")
            assert f"# TYPE {base} " in served or f"# TYPE {name} " in served, f"{part}: {name}"


def test_the_run_is_visible_in_the_metrics(stack_run: StackRun) -> None:
    m = stack_run.metrics
    assert value(m["api"], 'plantnotify_api_uploads_total{outcome="accepted"}') == 1
    assert value(m["worker"], "plantnotify_outbox_events_published_total") >= 1
    # At least the one push of the run; exactly-once per (event, device) is tested in
    # tests/bridge with the emulator's own record, where it belongs.
    assert value(m["bridge"], 'plantnotify_bridge_deliveries_total{status="sent"}') >= 1
    # the exporter, the worker, the bridge and the phone: all accepted by the plugin
    assert value(m["broker"], 'plantnotify_mqtt_connects_total{result="accepted"}') >= 4
    assert value(m["broker"], "plantnotify_broker_up") == 1
