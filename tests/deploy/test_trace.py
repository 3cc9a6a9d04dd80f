"""Issue 16 end to end, on the full run of real processes (tests/deploy/conftest.py): one
trace per analysis across API, worker and bridge, exported to an OTLP collector stand-in, and
the same story from the owner's endpoint and from ``plantnotify why``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.deploy.conftest import StackRun

STEPS = [
    "uploaded",
    "queued",
    "n8n_attempt",
    "committed",
    "published",
    "push_decision",
    "push",
    "delivered",
]


def test_the_parts_export_one_trace_to_the_collector(stack_run: StackRun) -> None:
    assert stack_run.collector is not None
    spans = stack_run.collector.wait_services(
        stack_run.trace_id, {"plantnotify-api", "plantnotify-worker", "plantnotify-bridge"}, 15
    )
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert {s.service for s in spans} >= {
        "plantnotify-api",
        "plantnotify-worker",
        "plantnotify-bridge",
    }, spans
    (upload,) = by_name["upload"]
    (analysis,) = by_name["analysis"]
    assert analysis.parent_span_id == upload.span_id, "the job's traceparent is the upload span"
    assert all(n.parent_span_id == analysis.span_id for n in by_name["n8n"])
    assert by_name["push"] and by_name["receipt"]


def test_the_owner_sees_every_step_with_times_and_the_trace(stack_run: StackRun) -> None:
    delivery = stack_run.delivery
    assert delivery["traceId"] == stack_run.trace_id
    assert delivery["analysisId"] == stack_run.analysis_id
    steps = [s["step"] for s in delivery["steps"]]
    for step in STEPS:
        assert step in steps, (step, steps)
    times = [s["at"] for s in delivery["steps"]]
    assert times == sorted(times)
    (browser,) = [s for s in delivery["steps"] if s["step"] == "delivered"]
    assert browser["device"].startswith(f"{stack_run.user_id}-web-")
    assert browser["detail"]["transport"] == "ws" and browser["detail"]["latencyMs"] > 0
    (push,) = [s for s in delivery["steps"] if s["step"] == "push"]
    assert push["detail"]["status"] == "sent" and push["device"].startswith("android …")
    assert "pushed: FCM accepted 1 of 1" in delivery["outcome"]


def test_plantnotify_why_tells_the_same_story(stack_run: StackRun) -> None:
    env = {**os.environ, "DATABASE_URL": stack_run.database_url}
    out = subprocess.run(
        [sys.executable, "-m", "plantnotify.cli", "why", stack_run.analysis_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    doc = json.loads(out)
    assert doc == stack_run.delivery, "the CLI and the endpoint read the same timeline"


def test_every_log_line_of_the_analysis_carries_its_trace_id(stack_run: StackRun) -> None:
    for name in ("api", "worker", "bridge"):
        lines = [json.loads(line) for line in stack_run.parts[name].log().splitlines()]
        mine = [d for d in lines if d.get("analysis_id") == stack_run.analysis_id]
        assert mine, f"{name} logged nothing about the analysis"
        assert all(d.get("trace_id") == stack_run.trace_id for d in mine), (
            name,
            [d for d in mine if d.get("trace_id") != stack_run.trace_id][:3],
        )
