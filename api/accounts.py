"""Login sessions, refresh-token rotation and revocation (the database is the source of truth).

- A login starts a **session** (one device): a row in ``auth_sessions`` and its first refresh
  token. Refresh tokens are random (256 bits), stored as SHA-256 only, and spent when used:
  ``rotate`` marks the presented one spent and hands out its successor.
- A spent token presented again means two parties hold it: the whole session is revoked
  (RFC 6819 §5.2.2.3, OAuth 2.0 Security BCP §4.14). One exception: the same token again within
  ``REFRESH_REUSE_GRACE_SECONDS`` while its successor is still unused (the answer to the first
  refresh was lost) is rotated again and the unused successor retired.
- Access tokens carry the session id (``sid``); every request checks the session still exists
  and is not revoked (``is_active``), so logout, "log out everywhere", a password change and
  account deletion end access tokens at once, not when they expire.
- Every revocation also writes a ``revocations`` row, which the API pushes to the broker
  (``api/revocation_feed.py``): MQTT tokens carry the same ``sid``, and the broker refuses and
  disconnects them.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from api import audit, store
from api.tokens import Principal
from plantnotify.db.models import AuthSession
from plantnotify.settings import Settings

REFRESH_TOKEN_BYTES = 32
# What the broker must remember past a revocation: every MQTT token minted before it has
# expired by then (their lifetime is at most MQTT_TOKEN_TTL_SECONDS, plus the plugin's leeway).
_BROKER_SLACK_SECONDS = 120

SESSION_REASONS = ("logout", "logout_all", "password_changed", "account_deleted", "refresh_reuse")


class RefreshRefused(Exception):
    """The refresh token is unknown, spent, or its session has ended."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A session's new refresh token (the only time it exists in clear)."""

    session_id: str
    user_id: str
    refresh_token: str


def _now() -> datetime:
    return datetime.now(UTC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _new_refresh(db: Session, session_id: str) -> tuple[str, str]:
    token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    digest = hash_token(token)
    store.add_refresh_token(db, digest, session_id)
    return token, digest


def start_session(
    db: Session, user_id: str, settings: Settings, *, user_agent: str | None = None
) -> Issued:
    """A new login session with its first refresh token (the caller commits)."""
    sid = uuid.uuid4().hex
    store.add_auth_session(
        db,
        sid,
        user_id,
        expires_at=_now() + timedelta(seconds=settings.refresh_token_ttl_seconds),
        user_agent=(user_agent or None) and user_agent[:200],
    )
    token, _ = _new_refresh(db, sid)
    return Issued(session_id=sid, user_id=user_id, refresh_token=token)


def rotate(db: Session, token: str, settings: Settings, *, ip: str | None = None) -> Issued:
    """Spend ``token`` and return its successor. Raises RefreshRefused; after a reuse the session
    is revoked in ``db`` and the caller must still commit."""
    if not token or len(token) > 256:
        raise RefreshRefused("malformed")
    row = store.refresh_token(db, hash_token(token), for_update=True)
    if row is None:
        raise RefreshRefused("unknown")
    auth = store.auth_session(db, row.session_id, for_update=True)
    now = _now()
    if auth is None or auth.revoked_at is not None or auth.expires_at <= now:
        raise RefreshRefused("session ended")
    if row.spent_at is not None:
        successor = store.refresh_token(db, row.replaced_by) if row.replaced_by else None
        within_grace = (now - row.spent_at).total_seconds() <= settings.refresh_reuse_grace_seconds
        if not (within_grace and successor is not None and successor.spent_at is None):
            revoke_session(db, auth, "refresh_reuse", settings)
            audit.record(db, audit.REFRESH_REUSE, user_id=auth.user_id, ip=ip, session=auth.id)
            raise RefreshRefused("reused")
        successor.spent_at = now  # retired unused: the lost answer's token
    new_token, digest = _new_refresh(db, auth.id)
    row.spent_at = row.spent_at or now
    row.replaced_by = digest
    auth.last_used_at = now
    auth.expires_at = now + timedelta(seconds=settings.refresh_token_ttl_seconds)
    return Issued(session_id=auth.id, user_id=auth.user_id, refresh_token=new_token)


def session_of_refresh(db: Session, token: str) -> AuthSession | None:
    if not token or len(token) > 256:
        return None
    row = store.refresh_token(db, hash_token(token))
    return store.auth_session(db, row.session_id) if row is not None else None


def _broker_expiry(settings: Settings, now: datetime) -> datetime:
    seconds = settings.mqtt_token_ttl_seconds + settings.mqtt_leeway_seconds + _BROKER_SLACK_SECONDS
    return now + timedelta(seconds=seconds)


def revoke_session(db: Session, auth: AuthSession, reason: str, settings: Settings) -> bool:
    """End one login session: its access, refresh and MQTT tokens. False if it already was."""
    if auth.revoked_at is not None:
        return False
    now = _now()
    auth.revoked_at = now
    auth.revoked_reason = reason
    store.drop_refresh_tokens(db, [auth.id])
    store.add_revocation(
        db, auth.user_id, reason, _broker_expiry(settings, now), session_id=auth.id
    )
    return True


def revoke_user(
    db: Session, user_id: str, reason: str, settings: Settings, *, whole_user: bool = False
) -> int:
    """End every session of a user; ``whole_user`` also refuses every token issued before now
    (account deletion, tokens of an external identity provider, which carry no session).
    Returns the number of sessions ended."""
    now = _now()
    sids = store.end_user_sessions(db, user_id, reason, now)
    if sids:
        store.drop_refresh_tokens(db, sids)
    expiry = _broker_expiry(settings, now)
    for sid in sids:
        store.add_revocation(db, user_id, reason, expiry, session_id=sid)
    if whole_user:
        # Whole seconds (JWT iat): a token issued earlier in this second is refused too.
        not_before = datetime.fromtimestamp(math.ceil(now.timestamp()), UTC)
        keep = max(settings.refresh_token_ttl_seconds, settings.mqtt_token_ttl_seconds)
        store.add_revocation(
            db, user_id, reason, expiry + timedelta(seconds=keep), not_before=not_before
        )
    return len(sids)


def is_active(db: Session, principal: Principal) -> bool:
    """Whether this access token's session (local) or user (external) is not revoked."""
    if principal.source == "local":
        return store.session_open(db, principal.session_id, principal.user_id)
    not_before = store.user_not_before(db, principal.user_id)
    if not_before is None:
        return True
    return principal.issued_at is not None and principal.issued_at >= not_before.timestamp()


def purge_expired(db: Session) -> None:
    """Forget what no token can need any more (ended sessions, expired revocations)."""
    now = _now()
    store.purge_auth_records(db, now, revoked_before=now - timedelta(seconds=86400))
