"""plantnotify/timeline.py on PostgreSQL: only its own steps are recorded, and retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from devtools.world import make_analysis, sessions_for
from plantnotify.contracts.events import utcnow
from plantnotify.db.models import TraceStep
from plantnotify.settings import Settings
from plantnotify.timeline import Step, mask_token, purge_older_than, record_step


def test_old_records_are_purged_and_recent_ones_kept(settings: Settings) -> None:
    aid, uid = make_analysis(settings)
    now = utcnow()
    with sessions_for(settings).begin() as s:
        for age_days, device in [(10, "old"), (1, "recent")]:
            record_step(
                s,
                analysis_id=aid,
                user_id=uid,
                trace_id=None,
                step=Step.DELIVERED,
                at=now - timedelta(days=age_days),
                event_id=f"e-{device}-{aid}",
                device=device,
            )
    with sessions_for(settings).begin() as s:
        assert purge_older_than(s, 7) >= 1
    with sessions_for(settings)() as s:
        left = s.scalars(select(TraceStep.device).where(TraceStep.analysis_id == aid)).all()
    assert left == ["recent"]


def test_steps_kept_elsewhere_are_not_recorded_twice(settings: Settings) -> None:
    with sessions_for(settings).begin() as s, pytest.raises(ValueError):
        record_step(
            s, analysis_id="a", user_id="u", trace_id=None, step=Step.PUBLISHED, at=utcnow()
        )


def test_device_tokens_are_never_shown_whole() -> None:
    assert mask_token("abcdefghijklmnop") == "…klmnop"
    assert mask_token("short") == "…"
