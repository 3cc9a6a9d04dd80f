"""The delivery timeline: "why didn't I get a notification?" answered from what is stored.

One analysis: uploaded → queued → N8N attempts → committed → published (PUBACK) → delivered to
live sessions (each device's receipt, with its own completion → device time) → push decision →
FCM result per device. Read by ``GET /plantanalyses/{id}/delivery`` (the owner) and by
``plantnotify why`` (operators), so both tell the same story.

Everything comes from the tables the parts already write (analyses, events, push_*), plus
``trace_steps`` for what they did not keep: each N8N attempt and every device's receipt.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field
from sqlalchemy import delete, desc, func, select
from sqlalchemy.orm import Session

from plantnotify.contracts.events import PUSHABLE_EVENTS, EventType, _Wire, utcnow
from plantnotify.db.models import (
    Analysis,
    Device,
    EventRow,
    PushAttempt,
    PushDecision,
    PushDelivery,
    TraceStep,
)


class Step(StrEnum):
    UPLOADED = "uploaded"
    QUEUED = "queued"
    N8N_ATTEMPT = "n8n_attempt"
    COMMITTED = "committed"
    PUBLISHED = "published"
    DELIVERED = "delivered"  # a device's receipt
    PUSH_DECISION = "push_decision"
    PUSH = "push"  # one device's FCM outcome


# The step kinds trace_steps holds (the rest is read from the other tables).
STORED_STEPS = (Step.N8N_ATTEMPT, Step.DELIVERED)


class TimelineStep(_Wire):
    at: datetime
    step: Step
    source: str  # which part recorded it: api, worker, bridge, device
    device: str | None = None  # an MQTT client id, or a push device (platform …token tail)
    detail: dict[str, Any] = Field(default_factory=dict)


class DeliveryTimeline(_Wire):
    analysis_id: str
    trace_id: str | None
    status: str
    outcome: str  # one sentence a support person can read out
    steps: list[TimelineStep]


def mask_token(token: str) -> str:
    """A device token as operators see it: never whole (it is a credential of the device)."""
    return "…" + token[-6:] if len(token) > 6 else "…"


def push_device(platform: str, token: str) -> str:
    return f"{platform} {mask_token(token)}"


# --- recording (writers: the worker and the bridge) -----------------------------------------


def record_step(
    session: Session,
    *,
    analysis_id: str,
    user_id: str,
    trace_id: str | None,
    step: Step,
    at: datetime,
    event_id: str | None = None,
    device: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add one of the steps only ``trace_steps`` keeps (inside the caller's transaction)."""
    if step not in STORED_STEPS:
        raise ValueError(f"{step} is read from its own table, not recorded here")
    session.add(
        TraceStep(
            analysis_id=analysis_id,
            user_id=user_id,
            trace_id=trace_id,
            step=str(step),
            at=at,
            event_id=event_id,
            device=device,
            detail=detail,
        )
    )


def purge_older_than(session: Session, days: int) -> int:
    """Retention: drop timeline records older than ``days``; returns how many."""
    result = session.execute(
        delete(TraceStep).where(TraceStep.at < func.now() - timedelta(days=days))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- reading -------------------------------------------------------------------------------


def _event_detail(row: EventRow) -> dict[str, Any]:
    detail: dict[str, Any] = {"event": row.type, "eventId": row.id}
    if row.type == EventType.PROGRESS:
        detail.update(progress=row.payload.get("progress"), stage=row.payload.get("stage"))
    return detail


def analysis_timeline(
    session: Session, analysis_id: str, *, owner: str | None = None
) -> DeliveryTimeline | None:
    """The timeline of one analysis; None when unknown (or, with ``owner``, not theirs)."""
    analysis = session.get(Analysis, analysis_id) if len(analysis_id) <= 36 else None
    if analysis is None or (owner is not None and analysis.user_id != owner):
        return None
    steps: list[TimelineStep] = [
        TimelineStep(
            at=analysis.created_at,
            step=Step.UPLOADED,
            source="api",
            detail={"bytes": analysis.image_size, "mimeType": analysis.mime_type},
        )
    ]
    if analysis.queued_at is not None:
        steps.append(TimelineStep(at=analysis.queued_at, step=Step.QUEUED, source="api"))
    for rec in session.scalars(
        select(TraceStep).where(TraceStep.analysis_id == analysis_id).order_by(TraceStep.at)
    ):
        steps.append(
            TimelineStep(
                at=rec.at,
                step=Step(rec.step),
                source="worker" if rec.step == Step.N8N_ATTEMPT else "device",
                device=rec.device,
                detail={
                    **(rec.detail or {}),
                    **({"eventId": rec.event_id} if rec.event_id else {}),
                },
            )
        )
    events = list(
        session.scalars(
            select(EventRow).where(EventRow.analysis_id == analysis_id).order_by(EventRow.seq)
        )
    )
    for ev in events:
        steps.append(
            TimelineStep(
                at=ev.created_at, step=Step.COMMITTED, source="worker", detail=_event_detail(ev)
            )
        )
        if ev.published_at is not None:
            steps.append(
                TimelineStep(
                    at=ev.published_at,
                    step=Step.PUBLISHED,
                    source="worker",
                    detail={"event": ev.type, "eventId": ev.id},
                )
            )
    terminal = [ev.id for ev in events if ev.type in PUSHABLE_EVENTS]
    decisions = (
        list(session.scalars(select(PushDecision).where(PushDecision.event_id.in_(terminal))))
        if terminal
        else []
    )
    for d in decisions:
        steps.append(
            TimelineStep(
                at=d.decided_at or d.created_at,
                step=Step.PUSH_DECISION,
                source="bridge",
                detail={
                    "eventId": d.event_id,
                    "state": d.state,
                    "reason": d.reason,
                    "liveSessionsAtPublish": d.live_at_publish,
                    "dueAt": d.due_at.isoformat(),
                },
            )
        )
    deliveries = (
        list(
            session.scalars(
                select(PushDelivery)
                .where(PushDelivery.event_id.in_(terminal))
                .order_by(PushDelivery.id)
            )
        )
        if terminal
        else []
    )
    attempts: dict[int, list[PushAttempt]] = {}
    if deliveries:
        for att in session.scalars(
            select(PushAttempt)
            .where(PushAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(PushAttempt.attempt)
        ):
            attempts.setdefault(att.delivery_id, []).append(att)
    for dv in deliveries:
        steps.append(
            TimelineStep(
                at=dv.finished_at or dv.updated_at,
                step=Step.PUSH,
                source="bridge",
                device=push_device(dv.platform, dv.device_token),
                detail={
                    "eventId": dv.event_id,
                    "status": dv.status,
                    "lastError": dv.last_error,
                    "attempts": [
                        {
                            "at": a.finished_at.isoformat(),
                            "outcome": a.outcome,
                            "httpStatus": a.http_status,
                            "errorCode": a.error_code,
                        }
                        for a in attempts.get(dv.id, [])
                    ],
                },
            )
        )
    steps.sort(key=lambda s: s.at)
    return DeliveryTimeline(
        analysis_id=analysis.id,
        trace_id=analysis.trace_id,
        status=analysis.status,
        outcome=_outcome(analysis, events, decisions, deliveries, steps),
        steps=steps,
    )


def _outcome(
    analysis: Analysis,
    events: list[EventRow],
    decisions: list[PushDecision],
    deliveries: list[PushDelivery],
    steps: list[TimelineStep],
) -> str:
    terminal = [ev for ev in events if ev.type in PUSHABLE_EVENTS]
    if not terminal:
        if analysis.queued_at is None:
            return "uploaded, not queued yet"
        return "still being analysed"
    last = terminal[-1]
    if last.published_at is None:
        return "result stored, not yet published to the broker (outbox waiting for it)"
    devices = sorted({s.device for s in steps if s.step == Step.DELIVERED and s.device})
    receipts = sum(1 for s in steps if s.step == Step.DELIVERED)
    parts: list[str] = []
    if receipts:
        who = ", ".join(devices) if devices else f"{receipts} device(s)"
        parts.append(f"delivered live to {who}")
    decision = next((d for d in decisions if d.event_id == last.id), None)
    if decision is None:
        parts.append("published; no push decision recorded (bridge not running or catching up)")
    elif decision.state == "pending":
        parts.append(f"push decision pending until {decision.due_at:%H:%M:%S}Z")
    elif decision.state == "suppressed":
        parts.append("no push needed: a device confirmed in time")
    elif decision.state == "no_devices":
        parts.append("no push: the user had no live session and no registered device")
    elif decision.state == "pushed":
        sent = [d for d in deliveries if d.event_id == last.id and d.status == "sent"]
        other = [d for d in deliveries if d.event_id == last.id and d.status != "sent"]
        text = f"pushed: FCM accepted {len(sent)} of {len(sent) + len(other)} device(s)"
        if other:
            text += " (" + ", ".join(f"{d.platform}: {d.status}" for d in other) + ")"
        parts.append(text)
    else:
        parts.append(f"push decision: {decision.state} ({decision.reason or 'no reason'})")
    return "; ".join(parts)


# --- a user's reachability (operators) -------------------------------------------------------


class DeviceReport(_Wire):
    device: str
    platform: str
    registered_at: datetime
    last_push_status: str | None = None
    last_push_at: datetime | None = None
    last_push_error: str | None = None


class AnalysisOutcome(_Wire):
    analysis_id: str
    created_at: datetime
    status: str
    trace_id: str | None
    outcome: str


class UserReport(_Wire):
    user_id: str
    at: datetime
    devices: list[DeviceReport]
    last_receipts: list[TimelineStep]
    analyses: list[AnalysisOutcome]


def user_report(session: Session, user_id: str, *, analyses: int = 20) -> UserReport:
    devices: list[DeviceReport] = []
    for dev in session.scalars(
        select(Device).where(Device.user_id == user_id).order_by(Device.created_at)
    ):
        last = session.scalars(
            select(PushDelivery)
            .where(PushDelivery.device_token == dev.token)
            .order_by(desc(PushDelivery.id))
            .limit(1)
        ).first()
        devices.append(
            DeviceReport(
                device=push_device(dev.platform, dev.token),
                platform=dev.platform,
                registered_at=dev.created_at,
                last_push_status=last.status if last else None,
                last_push_at=(last.finished_at or last.updated_at) if last else None,
                last_push_error=last.last_error if last else None,
            )
        )
    receipts = [
        TimelineStep(
            at=r.at,
            step=Step.DELIVERED,
            source="device",
            device=r.device,
            detail={**(r.detail or {}), "eventId": r.event_id, "analysisId": r.analysis_id},
        )
        for r in session.scalars(
            select(TraceStep)
            .where(TraceStep.user_id == user_id, TraceStep.step == str(Step.DELIVERED))
            .order_by(desc(TraceStep.at))
            .limit(10)
        )
    ]
    outcomes: list[AnalysisOutcome] = []
    for analysis_id in session.scalars(
        select(Analysis.id)
        .where(Analysis.user_id == user_id)
        .order_by(desc(Analysis.created_at))
        .limit(analyses)
    ):
        tl = analysis_timeline(session, analysis_id)
        if tl is not None:
            outcomes.append(
                AnalysisOutcome(
                    analysis_id=tl.analysis_id,
                    created_at=tl.steps[0].at,
                    status=tl.status,
                    trace_id=tl.trace_id,
                    outcome=tl.outcome,
                )
            )
    return UserReport(
        user_id=user_id, at=utcnow(), devices=devices, last_receipts=receipts, analyses=outcomes
    )
