"""The worker carries the analysis' trace: from the job's ``traceparent`` header into its events
and the delivery timeline's N8N attempts (real RabbitMQ, PostgreSQL, broker; fake N8N)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from devtools.world import Subscriber, make_analysis, sessions_for
from plantnotify.amqp.publisher import JobPublisher
from plantnotify.contracts.events import AnalysisStatus, EventType
from plantnotify.contracts.queues import AnalysisJob
from plantnotify.db.models import Analysis
from plantnotify.settings import Settings
from plantnotify.timeline import Step, analysis_timeline
from tests.support.fake_n8n import FakeN8n
from tests.support.worker import Queues, wait_published, wait_status

StartWorker = Callable[..., Any]
OpenSubscriber = Callable[[str], Subscriber]
TRACE_ID = "5b8aa5a2d2c872e8321cf37308d69df2"
TRACEPARENT = f"00-{TRACE_ID}-051581bf3cb55c13-01"


def test_the_trace_reaches_every_event_and_each_n8n_attempt_is_on_the_timeline(
    worker_settings: Settings,
    queues: Queues,
    start_worker: StartWorker,
    subscriber: OpenSubscriber,
    fake_n8n: FakeN8n,
) -> None:
    start_worker()
    aid, uid = make_analysis(worker_settings)
    with sessions_for(worker_settings).begin() as s:  # as the API stores it at upload
        s.execute(update(Analysis).where(Analysis.id == aid).values(trace_id=TRACE_ID))
    live = subscriber(uid)
    fake_n8n.plan(aid, "503")  # one transient failure, then the default answer
    publisher = JobPublisher(worker_settings.rabbitmq_url)
    try:
        publisher.publish(AnalysisJob(analysis_id=aid, user_id=uid, traceparent=TRACEPARENT))
    finally:
        publisher.close()

    assert wait_status(worker_settings, aid, timeout=20).status == AnalysisStatus.COMPLETED
    completed = live.wait_event(aid, EventType.COMPLETED)
    assert completed["traceId"] == TRACE_ID
    rows = wait_published(worker_settings, aid)
    assert rows and all(r.payload["traceId"] == TRACE_ID for r in rows)

    with sessions_for(worker_settings)() as s:
        timeline = analysis_timeline(s, aid)
    assert timeline is not None and timeline.trace_id == TRACE_ID
    attempts = [st.detail for st in timeline.steps if st.step == Step.N8N_ATTEMPT]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "http_5xx"), (2, "answer")]
    assert "HTTP 503" in attempts[0]["error"] and attempts[1]["error"] is None
    (done,) = [
        st
        for st in timeline.steps
        if st.step == Step.PUBLISHED and st.detail["event"] == EventType.COMPLETED
    ]
    last_attempt = [st for st in timeline.steps if st.step == Step.N8N_ATTEMPT][-1]
    assert last_attempt.at <= done.at
    assert timeline.outcome.startswith("published; no push decision recorded")
