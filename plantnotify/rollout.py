"""The realtime rollout switch: which users get MQTT, and which poll ``/notifications``.

One setting in PostgreSQL (``runtime_settings``, key ``realtime_rollout``): a percentage. A user
is in when their stable bucket (a hash of the user id, 0-99) is below it, so raising 10 → 50 →
100 only ever adds users, and each user stays on one side between changes. ``0`` is the kill
switch: everybody polls. Without a row, realtime is on for everybody (100).

The API reads it on every ``GET /config`` and ``POST /realtime/token``: a change takes effect
without a deploy, as soon as clients next ask (``ROLLOUT_CHECK_SECONDS``).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from plantnotify.db.models import RuntimeSetting

KEY = "realtime_rollout"
DEFAULT_PERCENT = 100
Mode = Literal["mqtt", "polling"]


def bucket(user_id: str) -> int:
    """The user's stable place in the rollout, 0-99."""
    digest = hashlib.sha256(f"realtime-rollout:{user_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def mode_for(user_id: str | None, percent: int) -> Mode:
    """``mqtt`` when the user is inside the rollout; without a user, only at 100 %."""
    if user_id is None:
        return "mqtt" if percent >= 100 else "polling"
    return "mqtt" if bucket(user_id) < percent else "polling"


def read_percent(session: Session) -> int:
    value = session.scalar(select(RuntimeSetting.value).where(RuntimeSetting.key == KEY))
    if isinstance(value, dict) and isinstance(value.get("percent"), int):
        return max(0, min(100, int(value["percent"])))
    return DEFAULT_PERCENT


def write_percent(session: Session, percent: int) -> None:
    if not 0 <= percent <= 100:
        raise ValueError("the rollout percentage must be between 0 and 100")
    statement = insert(RuntimeSetting).values(key=KEY, value={"percent": percent})
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[RuntimeSetting.key],
            set_={"value": statement.excluded.value, "updated_at": func.now()},
        )
    )
    session.commit()
