"""``GET /notifications?since=``: the caller's events only, oldest first, strictly after
``since``, paged without losing events that share a timestamp."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import Engine

from plantnotify.contracts.events import AnalysisCompleted, AnalysisFailed, AnalysisProgress
from plantnotify.db.models import EventRow
from plantnotify.settings import Settings
from tests.support.api import User

NOTIFICATIONS = "/api/v1/notifications"
T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(api_settings: Settings) -> Iterator[Engine]:
    engine = create_engine(api_settings.database_url)
    yield engine
    engine.dispose()


def add_event(
    db: Engine, event: AnalysisCompleted | AnalysisFailed | AnalysisProgress, at: datetime
) -> None:
    with db.begin() as conn:
        conn.execute(
            insert(EventRow).values(
                id=event.event_id,
                user_id=event.user_id,
                analysis_id=event.analysis_id,
                type=event.event.value,
                payload=event.to_wire(),
                created_at=at,
                expires_at=at + timedelta(days=7),
            )
        )


def events_for(db: Engine, user: User, count: int, start: datetime = T0) -> list[dict[str, object]]:
    """``count`` events of ``user`` one second apart; returns their payloads in time order."""
    out = []
    analysis_id = str(uuid.uuid4())
    for i in range(count):
        if i % 3 == 2:
            ev: AnalysisCompleted | AnalysisFailed | AnalysisProgress = AnalysisCompleted(
                analysis_id=analysis_id,
                user_id=user.user_id,
                crop_type="tomato",
                overall_health_score=80,
                image_url=f"/api/v1/plantanalyses/{analysis_id}/image",
            )
        else:
            ev = AnalysisProgress(
                analysis_id=analysis_id, user_id=user.user_id, progress=10 * i, stage="analyzing"
            )
        add_event(db, ev, start + timedelta(seconds=i))
        out.append(ev.to_wire())
    return out


def test_own_events_oldest_first_and_since_is_exclusive(
    client: TestClient, db: Engine, alice: User, bob: User
) -> None:
    mine = events_for(db, alice, 6)
    events_for(db, bob, 4)  # someone else's, same times
    r = client.get(NOTIFICATIONS, headers=alice.headers)
    assert r.status_code == 200
    assert r.json() == mine
    assert r.headers["X-Has-More"] == "false"

    # since = the time of the third event: only the ones strictly after it
    since = (T0 + timedelta(seconds=2)).isoformat()
    r = client.get(NOTIFICATIONS, params={"since": since}, headers=alice.headers)
    assert r.json() == mine[3:]
    assert datetime.fromisoformat(r.headers["X-Next-Since"]) == T0 + timedelta(seconds=5)

    # Z suffix, other offsets and a '+' that arrived as a space all mean the same instant
    for variant in (
        "2030-05-01T12:00:02Z",
        "2030-05-01T14:00:02+02:00",
        "2030-05-01T14:00:02 02:00",
    ):
        r = client.get(NOTIFICATIONS, params={"since": variant}, headers=alice.headers)
        assert r.json() == mine[3:], variant

    r = client.get(NOTIFICATIONS, params={"since": "2031-01-01T00:00:00Z"}, headers=alice.headers)
    assert r.json() == [] and r.headers["X-Next-Since"] == "2031-01-01T00:00:00Z"


def test_pages_never_split_a_transaction(client: TestClient, db: Engine, alice: User) -> None:
    # 5 events sharing one timestamp (one transaction), then 2 later ones
    analysis_id = str(uuid.uuid4())
    same = [
        AnalysisProgress(analysis_id=analysis_id, user_id=alice.user_id, progress=i, stage="s")
        for i in range(5)
    ]
    for ev in same:
        add_event(db, ev, T0)
    later = [
        AnalysisFailed(analysis_id=analysis_id, user_id=alice.user_id, error_message="boom")
        for _ in range(2)
    ]
    for i, ev in enumerate(later):
        add_event(db, ev, T0 + timedelta(seconds=1 + i))
    expected = [e.event_id for e in same + later]

    seen: list[str] = []
    since = (T0 - timedelta(seconds=1)).isoformat()
    for _ in range(10):
        r = client.get(NOTIFICATIONS, params={"since": since, "limit": 2}, headers=alice.headers)
        assert r.status_code == 200
        seen += [e["eventId"] for e in r.json()]
        since = r.headers["X-Next-Since"]
        if r.headers["X-Has-More"] == "false":
            break
    assert seen == expected


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"since": "2030-13-01T00:00:00Z"},
        {"since": ""},
        {"since": "1" * 100},
        {"limit": 0},
        {"limit": 501},
    ],
)
def test_bad_queries_are_422_with_a_clear_message(
    client: TestClient, alice: User, params: dict[str, object]
) -> None:
    r = client.get(NOTIFICATIONS, params=params, headers=alice.headers)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    if "since" in params:
        assert "ISO 8601" in detail


def test_notifications_require_authentication(client: TestClient) -> None:
    assert client.get(NOTIFICATIONS).status_code == 401
