"""Upload traces and ``GET /plantanalyses/{id}/delivery`` (issue 16), against the real app,
PostgreSQL and RabbitMQ (the job is read back from the API's own vhost)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from plantnotify.contracts.queues import ANALYSIS_QUEUE
from plantnotify.db.models import Analysis
from plantnotify.db.session import engine_for, session_factory
from plantnotify.settings import Settings
from tests.support.api import image_bytes, register
from tests.support.rabbit import declare, drain

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _upload(client: TestClient, headers: dict[str, str]) -> tuple[str, str]:
    r = client.post(
        "/api/v1/plantanalyses/async",
        headers=headers,
        files={"image": ("leaf.jpg", image_bytes(), "image/jpeg")},
    )
    assert r.status_code == 202, r.text
    return r.json()["analysisId"], r.headers["X-Trace-Id"]


def test_an_upload_continues_the_callers_trace_into_the_row_and_the_job(
    api_client: TestClient, api_settings: Settings, api_rabbitmq_url: str
) -> None:
    declare(api_rabbitmq_url)
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)
    user = register(api_client)
    analysis_id, trace_id = _upload(api_client, {**user.headers, "traceparent": TRACEPARENT})
    assert trace_id == "0af7651916cd43dd8448eb211c80319c"
    with session_factory(engine_for(api_settings.database_url))() as s:
        assert s.scalar(select(Analysis.trace_id).where(Analysis.id == analysis_id)) == trace_id
    jobs = [
        (props, body)
        for props, body in drain(api_rabbitmq_url, ANALYSIS_QUEUE)
        if analysis_id.encode() in body
    ]
    assert len(jobs) == 1
    props, body = jobs[0]
    header = (props.headers or {})["traceparent"]
    header = header.decode() if isinstance(header, bytes) else header
    assert header.startswith(f"00-{trace_id}-") and header.endswith("-01")
    assert b"trace" not in body, "the trace context travels in the headers, not the job body"


def test_an_upload_without_a_traceparent_gets_a_new_trace(
    api_client: TestClient, api_rabbitmq_url: str
) -> None:
    user = register(api_client)
    first = _upload(api_client, user.headers)[1]
    second = _upload(api_client, {**user.headers, "traceparent": "00-zz-bad-01"})[1]
    assert len({first, second}) == 2 and all(len(t) == 32 for t in (first, second))
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)


def test_the_owner_reads_the_delivery_timeline_and_nobody_else_does(
    api_client: TestClient, api_rabbitmq_url: str
) -> None:
    owner, other = register(api_client), register(api_client)
    analysis_id, trace_id = _upload(api_client, owner.headers)
    r = api_client.get(f"/api/v1/plantanalyses/{analysis_id}/delivery", headers=owner.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["analysisId"] == analysis_id and body["traceId"] == trace_id
    assert body["status"] == "Processing"
    assert [s["step"] for s in body["steps"]] == ["uploaded", "queued"]
    assert body["outcome"] == "still being analysed"
    for who, aid in [(other, analysis_id), (owner, "no-such-analysis"), (owner, "x" * 300)]:
        r = api_client.get(f"/api/v1/plantanalyses/{aid}/delivery", headers=who.headers)
        assert r.status_code == 404, (aid, r.text)
    assert api_client.get(f"/api/v1/plantanalyses/{analysis_id}/delivery").status_code == 401
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)
