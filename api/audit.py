"""The audit log (table ``audit_log``): who logged in, failed to, was revoked, deleted, had a
device token moved to them, or lost a persistent MQTT session to the cap. Written in the same
transaction as what it records, except failed logins, which are committed on their own (the
login itself changes nothing)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api import store

LOGIN = "login"
LOGIN_FAILED = "login_failed"
LOGIN_LOCKED = "login_locked"
REFRESH_REUSE = "refresh_reuse"
LOGOUT = "logout"
LOGOUT_ALL = "logout_all"
PASSWORD_CHANGED = "password_changed"  # noqa: S105 (an event name)
ACCOUNT_DELETED = "account_deleted"
DEVICE_MOVED = "device_moved"
DEVICE_EVICTED = "device_evicted"
MQTT_SESSION_EVICTED = "mqtt_session_evicted"  # over MQTT_MAX_PERSISTENT_SESSIONS_PER_USER
REGISTERED = "registered"


def record(
    db: Session,
    event: str,
    /,
    *,
    user_id: str | None,
    ip: str | None = None,
    **detail: Any,
) -> None:
    store.add_audit_entry(db, event, user_id, ip, detail or None)
