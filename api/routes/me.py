"""The caller's account: ``DELETE /me`` (everything goes) and ``GET /me/export`` (everything, as
JSON).

Deletion removes, in one transaction: analyses and their images, events (and with them push
decisions, deliveries, attempts and receipts), delivery trace steps, device tokens, login
sessions and refresh tokens, and the user row. It revokes every token of the user (the broker refuses them and
closes their live connections within seconds, ``api/revocation_feed.py``) and queues an empty
retained publish for every analysis topic of the user, so the broker holds nothing of theirs.
The audit log keeps the account's security events (logins, the deletion itself) without any
content of the account.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status

from api import accounts, audit, store
from api.deps import Caller, SessionDep, StateDep, client_ip
from api.routes.analyses import to_out
from api.schemas import ApiModel, ErrorResponse
from plantnotify.contracts import topics

router = APIRouter(prefix="/me", tags=["account"])


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={401: {"model": ErrorResponse}},
    summary="Delete the account and all its data; every token of it stops working",
)
def delete_me(request: Request, caller: Caller, session: SessionDep, state: StateDep) -> Response:
    uid = caller.user_id
    now = datetime.now(UTC)
    analysis_ids = store.user_analysis_ids(session, uid)
    store.add_retained_clears(
        session,
        [topics.analysis_topic(uid, aid) for aid in analysis_ids],
        expires_at=now + timedelta(seconds=state.settings.event_expiry_seconds),
    )
    events, devices = store.delete_user_content(session, uid)
    sessions = accounts.revoke_user(
        session, uid, "account_deleted", state.settings, whole_user=True
    )
    store.delete_user(session, uid)
    audit.record(
        session,
        audit.ACCOUNT_DELETED,
        user_id=uid,
        ip=client_ip(request),
        analyses=len(analysis_ids),
        events=events,
        devices=devices,
        sessions=sessions,
    )
    session.commit()
    state.revocations_changed()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class AccountExport(ApiModel):
    exported_at: datetime
    user: dict[str, Any]
    analyses: list[dict[str, Any]]
    events: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    audit_log: list[dict[str, Any]]


@router.get(
    "/export",
    response_model=AccountExport,
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
    summary="Everything stored about the caller, as JSON (images by URL)",
)
def export_me(caller: Caller, session: SessionDep, state: StateDep) -> AccountExport:
    uid = caller.user_id
    user = store.user_by_id(session, uid)
    if user is None and caller.source == "local":
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such account")
    analyses = store.user_analyses(session, uid)
    events = store.user_events(session, uid)
    devices = store.user_devices(session, uid)
    logins = store.user_auth_sessions(session, uid)
    entries = store.user_audit_entries(session, uid)
    return AccountExport(
        exported_at=datetime.now(UTC),
        user={
            "userId": uid,
            "username": user.username if user else None,
            "createdAt": user.created_at.isoformat() if user else None,
        },
        analyses=[
            to_out(a, state.settings).model_dump(mode="json", by_alias=True) for a in analyses
        ],
        events=[{"createdAt": e.created_at.isoformat(), "payload": e.payload} for e in events],
        devices=[
            {"token": d.token, "platform": d.platform, "createdAt": d.created_at.isoformat()}
            for d in devices
        ],
        sessions=[
            {
                "createdAt": s.created_at.isoformat(),
                "lastUsedAt": s.last_used_at.isoformat(),
                "revokedAt": s.revoked_at.isoformat() if s.revoked_at else None,
                "userAgent": s.user_agent,
            }
            for s in logins
        ],
        audit_log=[
            {"at": e.at.isoformat(), "event": e.event, "ip": e.ip, "detail": e.detail}
            for e in entries
        ],
    )
