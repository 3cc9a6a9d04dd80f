"""Rate limits shared by every API replica, kept in PostgreSQL (table ``rate_limits``).

Why PostgreSQL and not Redis: it is already the one store every API replica shares and every
limited request touches anyway (a login reads the user, an upload inserts the analysis), so the
limits add no service to deploy, secure or monitor; one atomic ``INSERT ... ON CONFLICT DO
UPDATE ... RETURNING`` per counted request (well under a millisecond) is exact across replicas
without a lock. Redis would be faster per hit, but nothing limited here runs at a rate where
that matters, and a second source of truth would have to be highly available too.

Each limit is a fixed window per key (``<limit>:<subject>``): at most ``max_hits`` per
``window`` seconds, then ``429`` with ``Retry-After`` until the window ends. Limits with a
``lockout`` also block the key for a growing time once exceeded (``lockout`` seconds, doubled
at every further excess, at most ``MAX_LOCKOUT_SECONDS``; the strikes are remembered for a
day) once ``max_hits`` is reached — the login failure limits, so guessing passwords gets slower
and slower. Expired rows are deleted by ``purge``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import HTTPException, status
from sqlalchemy.orm import Session, sessionmaker

from api import store
from plantnotify.settings import Settings

MAX_LOCKOUT_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    max_hits: int
    window: int  # seconds
    lockout: int = 0  # seconds of the first lockout once exceeded; 0: none


class RateLimited(Exception):
    def __init__(self, limit: Limit, retry_after: float) -> None:
        super().__init__(limit.name)
        self.limit = limit
        self.retry_after = max(1, math.ceil(retry_after))


def limits(settings: Settings) -> dict[str, Limit]:
    s = settings
    return {
        "login_account": Limit("login_account", s.login_failures_per_account, 900, lockout=60),
        "login_ip": Limit("login_ip", s.login_failures_per_ip, 900, lockout=60),
        "register_ip": Limit("register_ip", s.registrations_per_ip_per_hour, 3600),
        "upload_user": Limit("upload_user", s.uploads_per_user_per_minute, 60),
        "upload_ip": Limit("upload_ip", s.uploads_per_user_per_minute * 4, 60),
        "realtime_user": Limit("realtime_user", s.realtime_tokens_per_user_per_minute, 60),
    }


def _key(limit: Limit, subject: str) -> str:
    return f"{limit.name}:{subject}"[:200]


def blocked_for(db: Session, limit: Limit, subject: str) -> float | None:
    """Seconds the subject is still locked out of ``limit`` (without counting a hit)."""
    row = store.rate_limit_state(db, _key(limit, subject))
    if row is None:
        return None
    blocked_until, hits, reset_at = row
    now = datetime.now(UTC)
    if blocked_until is not None and blocked_until > now:
        return float((blocked_until - now).total_seconds())
    if not limit.lockout and hits >= limit.max_hits and reset_at > now:
        return float((reset_at - now).total_seconds())
    return None


def hit(db: Session, limit: Limit, subject: str) -> float | None:
    """Counts one hit; returns the seconds to wait when the limit is exceeded (else None).
    The caller commits."""
    key = _key(limit, subject)
    row = store.rate_limit_hit(db, key, limit.window)
    if row.blocked_until is not None and row.blocked_until > row.now:
        return float((row.blocked_until - row.now).total_seconds())
    if limit.lockout:
        if row.hits < limit.max_hits:
            return None
        seconds = min(MAX_LOCKOUT_SECONDS, limit.lockout * 2 ** min(row.strikes, 12))
        store.rate_limit_block(db, key, seconds)
        return float(seconds)
    if row.hits <= limit.max_hits:
        return None
    return float((row.reset_at - row.now).total_seconds())


def reset(db: Session, limit: Limit, subject: str) -> None:
    store.rate_limit_clear(db, _key(limit, subject))


def check(
    sessions: sessionmaker[Session], settings: Settings, *pairs: tuple[str, str | None]
) -> None:
    """Counts a hit on each (limit name, subject) pair; raises 429 if any is exceeded."""
    if not settings.rate_limits_enabled:
        return
    table = limits(settings)
    waits = []
    with sessions() as db:
        for name, subject in pairs:
            if subject:
                wait = hit(db, table[name], subject)
                if wait is not None:
                    waits.append(wait)
        db.commit()
    if waits:
        raise too_many(max(waits))


def too_many(retry_after: float) -> HTTPException:
    seconds = max(1, math.ceil(retry_after))
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"Too many attempts; try again in {_human(seconds)}",
        headers={"Retry-After": str(seconds)},
    )


def _human(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} minutes"


def purge(db: Session) -> int:
    """Deletes windows that ended and lockouts that expired (strikes are kept for a day)."""
    return store.purge_rate_limits(db)
