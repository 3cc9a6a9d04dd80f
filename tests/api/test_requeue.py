"""An upload whose API process died between its commit and the publisher confirm still gets
its job queued (by the requeue sweep), exactly once per sweep, and nothing else is touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, delete, select
from sqlalchemy.engine import Engine

from api.requeue import requeue_unqueued
from plantnotify.amqp.publisher import JobPublisher
from plantnotify.contracts.queues import ANALYSIS_QUEUE, AnalysisJob
from plantnotify.db.models import Analysis
from plantnotify.db.session import make_engine, session_factory
from plantnotify.settings import Settings
from tests.support.rabbit import declare, drain


@pytest.fixture
def engine(api_settings: Settings) -> Iterator[Engine]:
    e = create_engine(api_settings.database_url)
    yield e
    e.dispose()


def _analysis(
    engine: Engine, *, age: timedelta, status: str = "Processing", queued: bool = False
) -> str:
    analysis_id = str(uuid.uuid4())
    created = datetime.now(UTC) - age
    with engine.begin() as conn:
        conn.execute(
            Analysis.__table__.insert().values(
                id=analysis_id,
                user_id="requeue-user",
                status=status,
                mime_type="image/png",
                image_size=1,
                created_at=created,
                updated_at=created,
                queued_at=created if queued else None,
            )
        )
    return analysis_id


def test_sweep_queues_only_stale_unconfirmed_uploads(
    api_settings: Settings, api_rabbitmq_url: str, engine: Engine
) -> None:
    declare(api_rabbitmq_url)
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)
    orphan = _analysis(engine, age=timedelta(minutes=5))
    in_flight = _analysis(engine, age=timedelta(seconds=1))  # its upload is still publishing
    queued = _analysis(engine, age=timedelta(minutes=5), queued=True)
    failed = _analysis(engine, age=timedelta(minutes=5), status="Failed")

    db = make_engine(api_settings.database_url, pool_size=2)
    publisher = JobPublisher(api_rabbitmq_url)
    try:
        sessions = session_factory(db)
        assert requeue_unqueued(sessions, publisher, grace_seconds=60) >= 1
        jobs = [
            AnalysisJob.model_validate_json(b) for _, b in drain(api_rabbitmq_url, ANALYSIS_QUEUE)
        ]
        ids = [j.analysis_id for j in jobs]
        assert orphan in ids
        assert not {in_flight, queued, failed} & set(ids)
        assert next(j for j in jobs if j.analysis_id == orphan).user_id == "requeue-user"
        # stamped: the next sweep leaves it alone
        assert requeue_unqueued(sessions, publisher, grace_seconds=60) == 0
        assert drain(api_rabbitmq_url, ANALYSIS_QUEUE) == []
        with engine.connect() as conn:
            stamped = conn.execute(
                select(Analysis.queued_at).where(Analysis.id == orphan)
            ).scalar_one()
            untouched = conn.execute(
                select(Analysis.queued_at).where(Analysis.id == in_flight)
            ).scalar_one()
        assert stamped is not None and untouched is None
    finally:
        publisher.close()
        db.dispose()
        # leave no unqueued Processing rows behind for the session app's own sweep to publish
        with engine.begin() as conn:
            conn.execute(
                delete(Analysis).where(Analysis.id.in_([orphan, in_flight, queued, failed]))
            )
