"""The bridge's durable state in PostgreSQL: the only truth several bridges share.

* ``push_decisions``: one row per terminal event the bridge has seen published, inserted with
  ``ON CONFLICT DO NOTHING`` (MQTT and the catch-up sweep may both see it; so may two bridges).
  Due rows are claimed with ``FOR UPDATE SKIP LOCKED``: one bridge decides each event.
* ``push_receipts``: the first receipt for an event, accepted only from the event's owner.
* ``push_deliveries``: unique per (event, device). A bridge leases a delivery before sending
  (``status='sending'``, ``next_attempt_at`` = lease end) and reports with a fence on the attempt
  number, so a delivery is never sent by two bridges at once.
* ``push_attempts``: every attempt and what came of it.

All times are passed in (``now``) so that the logic above the store stays testable.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    DateTime,
    String,
    Table,
    and_,
    bindparam,
    cast,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import Session, sessionmaker

from bridge.decision import Action, DecisionInput, DecisionState, decide
from bridge.retry import DeliveryStatus, NextStep, Outcome
from plantnotify.contracts.events import PUSHABLE_EVENTS, Receipt
from plantnotify.db.models import (
    Analysis,
    Device,
    EventRow,
    PushAttempt,
    PushDecision,
    PushDelivery,
    PushReceipt,
    TraceStep,
)
from plantnotify.db.session import commit_without_flush_wait, transaction
from plantnotify.timeline import Step

log = logging.getLogger("plantnotify.bridge.store")

TERMINAL_TYPES = tuple(str(t) for t in PUSHABLE_EVENTS)
OPEN_DELIVERY = (str(DeliveryStatus.PENDING), str(DeliveryStatus.SENDING))


@dataclass(frozen=True, slots=True)
class EventRef:
    event_id: str
    user_id: str
    analysis_id: str
    type: str
    published_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewDecision:
    ref: EventRef
    published_at: datetime
    live_at_publish: int | None
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Finalized:
    """A decision that reached its final state in :meth:`Store.process_due`."""

    event_id: str
    user_id: str
    state: DecisionState  # never PENDING
    reason: str
    published_at: datetime
    devices: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this bridge leased; report it with :meth:`Store.record_attempt`."""

    delivery_id: int
    event_id: str
    user_id: str
    device_token: str
    platform: str
    attempt: int
    created_at: datetime
    payload: dict[str, Any]
    published_at: datetime | None
    lost_previous: bool  # the previous lease ran out without a report (a bridge died)
    lease_until: datetime
    # For log correlation: the analysis, and the X-Request-ID of its upload (None if unknown).
    analysis_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One FCM attempt at a claimed delivery, to be stored with :meth:`Store.record_attempts`."""

    claim: Claim
    outcome: Outcome
    step: NextStep
    started: datetime
    finished: datetime
    http_status: int | None = None
    error_code: str | None = None
    detail: str | None = None
    retry_after: float | None = None
    message_id: str | None = None


class ReceiptResult(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    FOREIGN = "foreign"  # no such event, or it belongs to another user


@dataclass(frozen=True, slots=True)
class ReceiptRecorded:
    result: ReceiptResult
    # Completion → device, as the device reported it; set the first time a device confirms.
    latency_seconds: float | None = None
    trace_id: str | None = None


def delivery_latency(payload: dict[str, Any], device_received_at: int | None) -> float | None:
    """Seconds from the event's completion to the device having it (device clock), or None
    when the device did not say, or its clock puts it before the completion (skew)."""
    done = payload.get("completedAt") or payload.get("failedAt")
    if device_received_at is None or not isinstance(done, str):
        return None
    try:
        completed = datetime.fromisoformat(done.replace("Z", "+00:00"))
    except ValueError:
        return None
    latency = device_received_at / 1000 - completed.timestamp()
    return latency if latency >= 0 else None


# The statements that carry every event, written once: their SQL is compiled once and cached,
# whatever the number of rows (a multi-row VALUES list is compiled anew for each call, which
# cost ~0.6 ms of CPU per row and was what bounded the bridge's intake).
_DECISIONS = typing.cast(Table, PushDecision.__table__)
_INSERT_DECISIONS = (
    insert(_DECISIONS)
    .on_conflict_do_nothing(index_elements=[_DECISIONS.c.event_id])
    .returning(_DECISIONS.c.event_id)
)
_INSERT_DELIVERIES = insert(typing.cast(Table, PushDelivery.__table__)).on_conflict_do_nothing(
    constraint="uq_push_deliveries_event_device"
)
_FINAL = (
    func.unnest(
        cast(bindparam("eids"), ARRAY(String)),
        cast(bindparam("states"), ARRAY(String)),
        cast(bindparam("reasons"), ARRAY(String)),
        cast(bindparam("receipt_ats"), ARRAY(DateTime(timezone=True))),
    )
    .table_valued("eid", "state", "reason", "receipt_at")
    .render_derived(name="v")
)
_FINALIZE = (
    update(_DECISIONS)
    .where(_DECISIONS.c.event_id == _FINAL.c.eid)
    .values(
        state=_FINAL.c.state,
        reason=_FINAL.c.reason,
        receipt_at=_FINAL.c.receipt_at,
        decided_at=bindparam("now"),
        decided_by=bindparam("bridge"),
    )
)
_WAIT = (
    func.unnest(
        cast(bindparam("eids"), ARRAY(String)),
        cast(bindparam("dues"), ARRAY(DateTime(timezone=True))),
    )
    .table_valued("eid", "due")
    .render_derived(name="w")
)
_POSTPONE = (
    update(_DECISIONS).where(_DECISIONS.c.event_id == _WAIT.c.eid).values(due_at=_WAIT.c.due)
)


class Store:
    def __init__(self, factory: sessionmaker[Session], instance: str) -> None:
        self._factory = factory
        self.instance = instance

    @contextmanager
    def _begin(self, *, durable: bool) -> Iterator[Session]:
        """A transaction. ``durable=False`` commits without waiting for the WAL flush: for the
        decision side only, which is re-derived from ``events`` (the durable truth) if a
        PostgreSQL crash loses it. Leases and attempt outcomes are always durable: a later
        durable commit also flushes every earlier asynchronous one."""
        with transaction(self._factory) as s:
            if not durable:
                commit_without_flush_wait(s)
            yield s

    # --- intake -----------------------------------------------------------------------------

    def events(self, event_ids: Sequence[str]) -> dict[str, EventRef]:
        if not event_ids:
            return {}
        with self._factory() as s:
            rows = s.execute(
                select(
                    EventRow.id,
                    EventRow.user_id,
                    EventRow.analysis_id,
                    EventRow.type,
                    EventRow.published_at,
                ).where(EventRow.id.in_(list(event_ids)))
            ).all()
        return {row[0]: EventRef(*row) for row in rows}

    def unseen_published(self, since: datetime, limit: int = 500) -> list[EventRef]:
        """Terminal events published since ``since`` that no bridge has taken in yet."""
        q = (
            select(
                EventRow.id,
                EventRow.user_id,
                EventRow.analysis_id,
                EventRow.type,
                EventRow.published_at,
            )
            .where(
                EventRow.published_at.is_not(None),
                EventRow.published_at > since,
                EventRow.type.in_(TERMINAL_TYPES),
                ~select(PushDecision.event_id).where(PushDecision.event_id == EventRow.id).exists(),
            )
            .order_by(EventRow.published_at)
            .limit(limit)
        )
        with self._factory() as s:
            return [EventRef(*row) for row in s.execute(q).all()]

    def create_decisions(self, rows: Sequence[NewDecision]) -> set[str]:
        """Record that these events were seen published; returns the ids this call created
        (an id already there was taken in by another path or bridge first)."""
        if not rows:
            return set()
        params = [
            {
                "event_id": r.ref.event_id,
                "user_id": r.ref.user_id,
                "analysis_id": r.ref.analysis_id,
                "event_type": r.ref.type,
                "published_at": r.published_at,
                "live_at_publish": r.live_at_publish,
                "due_at": r.due_at,
                "state": str(DecisionState.PENDING),
            }
            for r in rows
        ]
        with self._begin(durable=False) as s:
            created = set(s.execute(_INSERT_DECISIONS, params).scalars())
            if created:
                # A device may have confirmed before we took the event in (it got the event at
                # the same moment we did): such a decision is due now, to be settled at once.
                s.execute(
                    update(PushDecision)
                    .where(
                        PushDecision.event_id.in_(created),
                        PushDecision.event_id.in_(select(PushReceipt.event_id)),
                    )
                    .values(due_at=func.least(PushDecision.due_at, func.now()))
                )
            return created

    # --- receipts and session changes ---------------------------------------------------------

    def record_receipt(
        self, user_id: str, receipt: Receipt | str, now: datetime
    ) -> ReceiptRecorded:
        """The first receipt of an event settles its decision; every device's is on the timeline."""
        if isinstance(receipt, str):
            receipt = Receipt(event_id=receipt)
        event_id = receipt.event_id
        with self._begin(durable=False) as s:
            event = s.execute(
                select(EventRow.user_id, EventRow.analysis_id, EventRow.payload).where(
                    EventRow.id == event_id
                )
            ).first()
            if event is None or event.user_id != user_id:
                return ReceiptRecorded(ReceiptResult.FOREIGN)
            latency = delivery_latency(event.payload, receipt.received_at)
            device_new = s.execute(
                insert(TraceStep)
                .values(
                    analysis_id=event.analysis_id,
                    user_id=user_id,
                    trace_id=event.payload.get("traceId"),
                    step=str(Step.DELIVERED),
                    at=now,
                    event_id=event_id,
                    device=receipt.client_id,
                    detail={
                        "transport": receipt.transport,
                        "deviceReceivedAt": receipt.received_at,
                        "latencyMs": None if latency is None else round(latency * 1000, 1),
                    },
                )
                .on_conflict_do_nothing()
            ).rowcount  # type: ignore[attr-defined]
            added = s.execute(
                insert(PushReceipt)
                .values(event_id=event_id, user_id=user_id, received_at=now)
                .on_conflict_do_nothing(index_elements=[PushReceipt.event_id])
            ).rowcount  # type: ignore[attr-defined]
            # Make a pending decision due now, so it is settled (suppressed) at once.
            s.execute(
                update(PushDecision)
                .where(
                    PushDecision.event_id == event_id,
                    PushDecision.state == DecisionState.PENDING,
                )
                .values(due_at=now)
            )
        return ReceiptRecorded(
            ReceiptResult.ACCEPTED if added else ReceiptResult.DUPLICATE,
            latency if device_new else None,
            event.payload.get("traceId"),
        )

    def expedite(self, user_ids: Sequence[str], now: datetime) -> int:
        """Make the users' pending decisions due now (they went offline without a receipt)."""
        if not user_ids:
            return 0
        with self._begin(durable=False) as s:
            return int(
                s.execute(
                    update(PushDecision)
                    .where(
                        PushDecision.user_id.in_(list(user_ids)),
                        PushDecision.state == DecisionState.PENDING,
                        PushDecision.due_at > now,
                    )
                    .values(due_at=now)
                ).rowcount  # type: ignore[attr-defined]
            )

    def pending_users(self) -> list[str]:
        with self._factory() as s:
            return list(
                s.execute(
                    select(PushDecision.user_id)
                    .where(PushDecision.state == DecisionState.PENDING)
                    .distinct()
                ).scalars()
            )

    # --- deciding -------------------------------------------------------------------------------

    def process_due(
        self,
        now: datetime,
        grace: timedelta,
        live_now: Callable[[str], int | None],
        limit: int = 500,
    ) -> list[Finalized]:
        """Decide due pending decisions (that no other bridge holds) in one transaction: one
        statement each to read them, their receipts, devices and earlier deliveries, and one
        each to write the outcomes, the new due times and the deliveries."""
        out: list[Finalized] = []
        with self._begin(durable=False) as s:
            decisions = s.execute(
                select(
                    PushDecision.event_id,
                    PushDecision.user_id,
                    PushDecision.event_type,
                    PushDecision.published_at,
                    PushDecision.live_at_publish,
                )
                .where(PushDecision.state == DecisionState.PENDING, PushDecision.due_at <= now)
                # Newest first: under a backlog (a bridge catching up after an outage) a fresh
                # event must not wait behind events that are already minutes old.
                .order_by(PushDecision.published_at.desc())
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not decisions:
                return out
            ids = [d.event_id for d in decisions]
            users = sorted({d.user_id for d in decisions})
            receipts = dict(
                s.execute(
                    select(PushReceipt.event_id, PushReceipt.received_at).where(
                        PushReceipt.event_id.in_(ids)
                    )
                ).all()
            )
            devices: dict[str, list[tuple[str, str]]] = {}
            for token, platform, uid in s.execute(
                select(Device.token, Device.platform, Device.user_id)
                .where(Device.user_id.in_(users))
                .order_by(Device.created_at)
            ):
                devices.setdefault(uid, []).append((token, platform))
            pushed: dict[str, set[str]] = {}
            for eid, token in s.execute(
                select(PushDelivery.event_id, PushDelivery.device_token).where(
                    PushDelivery.event_id.in_(ids)
                )
            ):
                pushed.setdefault(eid, set()).add(token)

            finals: list[tuple[str, str, str, datetime | None]] = []
            waits: list[tuple[str, datetime]] = []
            new_deliveries: list[dict[str, Any]] = []
            for d in decisions:
                user_devices = devices.get(d.user_id, [])
                decision = decide(
                    DecisionInput(
                        event_type=d.event_type,
                        published_at=d.published_at,
                        now=now,
                        grace=grace,
                        live_at_publish=d.live_at_publish,
                        live_now=live_now(d.user_id),
                        receipt_seen=d.event_id in receipts,
                        devices=tuple(t for t, _ in user_devices),
                        already_pushed=frozenset(pushed.get(d.event_id, ())),
                    )
                )
                if decision.action is Action.WAIT:
                    waits.append((d.event_id, decision.until or now))
                    continue
                state = decision.state
                receipt_at = receipts.get(d.event_id) if state is DecisionState.SUPPRESSED else None
                if decision.action is Action.PUSH:
                    platforms = dict(user_devices)
                    new_deliveries += [
                        {
                            "event_id": d.event_id,
                            "user_id": d.user_id,
                            "device_token": token,
                            "platform": platforms[token],
                            "status": str(DeliveryStatus.PENDING),
                            "next_attempt_at": now,
                        }
                        for token in decision.devices
                    ]
                finals.append((d.event_id, str(state), str(decision.reason), receipt_at))
                out.append(
                    Finalized(
                        d.event_id,
                        d.user_id,
                        state,
                        str(decision.reason),
                        d.published_at,
                        len(decision.devices),
                    )
                )
            if finals:
                eids, states, reasons, receipt_ats = (list(c) for c in zip(*finals, strict=True))
                s.execute(
                    _FINALIZE,
                    {
                        "eids": eids,
                        "states": states,
                        "reasons": reasons,
                        "receipt_ats": receipt_ats,
                        "now": now,
                        "bridge": self.instance,
                    },
                )
            if waits:
                s.execute(
                    _POSTPONE,
                    {"eids": [e for e, _ in waits], "dues": [d for _, d in waits]},
                )
            if new_deliveries:
                s.execute(_INSERT_DELIVERIES, new_deliveries)
        return out

    # --- delivering -----------------------------------------------------------------------------

    def claim_deliveries(self, now: datetime, lease: timedelta, limit: int) -> list[Claim]:
        if limit <= 0:
            return []
        due = (
            select(PushDelivery.id, PushDelivery.status.label("old_status"))
            .where(PushDelivery.status.in_(OPEN_DELIVERY), PushDelivery.next_attempt_at <= now)
            .order_by(PushDelivery.next_attempt_at.desc())  # newest first, as decisions
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("due")
        )
        stmt = (
            update(PushDelivery)
            .where(PushDelivery.id == due.c.id)
            .values(
                status=DeliveryStatus.SENDING,
                attempts=PushDelivery.attempts + 1,
                next_attempt_at=now + lease,
                updated_at=now,
            )
            .returning(
                PushDelivery.id,
                PushDelivery.event_id,
                PushDelivery.user_id,
                PushDelivery.device_token,
                PushDelivery.platform,
                PushDelivery.attempts,
                PushDelivery.created_at,
                due.c.old_status,
            )
        )
        with self._begin(durable=True) as s:
            rows = s.execute(stmt).all()
            if not rows:
                return []
            events = {
                eid: (payload, published, analysis_id, request_id)
                for eid, payload, published, analysis_id, request_id in s.execute(
                    select(
                        EventRow.id,
                        EventRow.payload,
                        PushDecision.published_at,
                        EventRow.analysis_id,
                        Analysis.request_id,
                    )
                    .join(PushDecision, PushDecision.event_id == EventRow.id)
                    .outerjoin(Analysis, Analysis.id == EventRow.analysis_id)
                    .where(EventRow.id.in_({r.event_id for r in rows}))
                )
            }
            claims = []
            for r in rows:
                payload, published, analysis_id, request_id = events[r.event_id]
                lost = r.old_status == DeliveryStatus.SENDING
                if lost:
                    # The previous holder's lease ran out without a report: it died mid-send.
                    # Whether FCM got that attempt is unknown; record it as such.
                    s.add(
                        PushAttempt(
                            delivery_id=r.id,
                            attempt=r.attempts - 1,
                            started_at=now,
                            finished_at=now,
                            outcome="unknown",
                            detail="lease expired without a report (bridge stopped mid-send?)",
                            bridge=self.instance,
                        )
                    )
                claims.append(
                    Claim(
                        delivery_id=r.id,
                        event_id=r.event_id,
                        user_id=r.user_id,
                        device_token=r.device_token,
                        platform=r.platform,
                        attempt=r.attempts,
                        created_at=r.created_at,
                        payload=payload,
                        published_at=published,
                        lost_previous=lost,
                        lease_until=now + lease,
                        analysis_id=analysis_id,
                        request_id=request_id,
                    )
                )
        return claims

    def release(self, claim: Claim, now: datetime) -> None:
        """Give back a leased delivery that was not sent (its lease is too close to expiry)."""
        with self._begin(durable=True) as s:
            s.execute(
                update(PushDelivery)
                .where(
                    PushDelivery.id == claim.delivery_id,
                    PushDelivery.status == DeliveryStatus.SENDING,
                    PushDelivery.attempts == claim.attempt,
                )
                .values(
                    status=DeliveryStatus.PENDING,
                    attempts=PushDelivery.attempts - 1,
                    next_attempt_at=now,
                )
            )

    def record_attempt(
        self,
        claim: Claim,
        *,
        outcome: Outcome,
        step: NextStep,
        started: datetime,
        finished: datetime,
        http_status: int | None = None,
        error_code: str | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
        message_id: str | None = None,
    ) -> bool:
        """Store the attempt and the delivery's new state; False if our lease had been lost."""
        (owned,) = self.record_attempts(
            [
                Attempt(
                    claim,
                    outcome=outcome,
                    step=step,
                    started=started,
                    finished=finished,
                    http_status=http_status,
                    error_code=error_code,
                    detail=detail,
                    retry_after=retry_after,
                    message_id=message_id,
                )
            ]
        )
        return owned

    def record_attempts(self, attempts: Sequence[Attempt]) -> list[bool]:
        """Store several attempts in one durable transaction (one WAL flush for the lot, not
        one per push); for each, False if its lease had been lost. Each is fenced on its own
        attempt number exactly as one alone would be."""
        out: list[bool] = []
        if not attempts:
            return out
        with self._begin(durable=True) as s:
            for a in attempts:
                out.append(self._record(s, a))
        return out

    def _record(self, s: Session, a: Attempt) -> bool:
        claim, step, finished = a.claim, a.step, a.finished
        terminal = step.retry_in is None
        next_at = finished + timedelta(seconds=step.retry_in or 0)
        values: dict[str, Any] = {
            "status": str(step.status),
            "next_attempt_at": next_at,
            "updated_at": finished,
            "last_error": (f"{a.error_code}: {a.detail}" if a.error_code else a.detail or None),
        }
        if values["last_error"]:
            values["last_error"] = values["last_error"][:300]
        if a.message_id:
            values["fcm_message_id"] = a.message_id
            values["last_error"] = None
        if terminal:
            values["finished_at"] = finished
        s.add(
            PushAttempt(
                delivery_id=claim.delivery_id,
                attempt=claim.attempt,
                started_at=a.started,
                finished_at=finished,
                outcome=str(a.outcome),
                http_status=a.http_status,
                error_code=a.error_code,
                detail=(a.detail or None) and a.detail[:300],
                retry_after=a.retry_after,
                bridge=self.instance,
            )
        )
        owned = s.execute(
            update(PushDelivery)
            .where(
                PushDelivery.id == claim.delivery_id,
                PushDelivery.status == DeliveryStatus.SENDING,
                PushDelivery.attempts == claim.attempt,
            )
            .values(**values)
        ).rowcount  # type: ignore[attr-defined]
        if a.outcome is Outcome.DEVICE_GONE:
            s.execute(
                delete(Device).where(
                    and_(Device.token == claim.device_token, Device.user_id == claim.user_id)
                )
            )
        return bool(owned)

    def next_due(self) -> datetime | None:
        """The earliest time anything pending (a decision or a delivery) falls due."""
        decisions = (
            select(func.min(PushDecision.due_at))
            .where(PushDecision.state == DecisionState.PENDING)
            .scalar_subquery()
        )
        deliveries = (
            select(func.min(PushDelivery.next_attempt_at))
            .where(PushDelivery.status.in_(OPEN_DELIVERY))
            .scalar_subquery()
        )
        with self._factory() as s:
            return s.execute(select(func.least(decisions, deliveries))).scalar()
