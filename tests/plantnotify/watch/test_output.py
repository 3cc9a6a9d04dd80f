"""What ``plantnotify watch`` prints and remembers, without a network."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from plantnotify.contracts.events import AnalysisCompleted, AnalysisFailed, AnalysisProgress
from plantnotify.watch.output import HumanLines, JsonLines
from plantnotify.watch.seen import SeenStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def completed() -> AnalysisCompleted:
    return AnalysisCompleted(
        analysis_id="a1",
        user_id="u1",
        crop_type="tomato",
        overall_health_score=72,
        primary_concern="Early blight",
        image_url="/img",
        completed_at=T0,
    )


def test_human_output_reads_like_a_notification() -> None:
    out = io.StringIO()
    lines = HumanLines(out)
    lines.event(completed(), "live")
    lines.event(
        AnalysisFailed(analysis_id="a2", user_id="u1", error_message="N8N timed out"), "recovered"
    )
    lines.event(
        AnalysisProgress(analysis_id="a3", user_id="u1", progress=40, stage="scoring"), "retained"
    )
    lines.status("connected", clientId="u1-phone", reason=None)
    unknown = completed().model_copy(update={"crop_type": "unknown"})
    lines.event(unknown, "live")
    text = out.getvalue().splitlines()
    assert text[0].endswith("ready     Tomato · health 72/100 · Early blight  app://analysis/a1")
    assert text[1].endswith("failed    analysis a2: N8N timed out (missed, recovered)")
    assert text[2].endswith("progress  analysis a3: 40% scoring (stored)")
    assert text[3].endswith("[connected] clientId=u1-phone")
    assert "ready     Plant · health 72/100" in text[4]


def test_json_output_is_one_object_per_line_with_the_contract_fields() -> None:
    out = io.StringIO()
    lines = JsonLines(out)
    lines.status("connected", clientId="u1-phone")
    lines.event(completed(), "retained")
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["type"] for d in docs] == ["status", "event"]
    event = docs[1]
    assert event["source"] == "retained"
    assert event["event"]["event"] == "AnalysisCompleted"
    assert event["event"]["deepLink"] == "app://analysis/a1"
    assert event["event"]["overallHealthScore"] == 72
    datetime.fromisoformat(event["receivedAt"])


def test_seen_ids_and_cursor_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "u1-phone.json"
    seen = SeenStore(path)
    assert seen.add("e1", T0)
    assert not seen.add("e1", T0), "a duplicate is reported as such"
    assert seen.add("e2", T0 - timedelta(hours=1))
    seen.add("p1", None)  # progress events carry no time
    seen.save()
    again = SeenStore(path)
    assert "e1" in again and "e2" in again and "p1" in again
    assert again.cursor == T0, "the cursor is the newest event time, not the last one"


def test_seen_store_is_bounded_and_ignores_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    seen = SeenStore(path, max_ids=3)
    for i in range(5):
        seen.add(f"e{i}", None)
    seen.save()
    again = SeenStore(path, max_ids=3)
    assert "e0" not in again and "e1" not in again and "e4" in again
    path.write_text("{not json")
    fresh = SeenStore(path)
    assert "e4" not in fresh and fresh.cursor is None
