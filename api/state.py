"""What one API app holds: settings and the long-lived clients its routes share."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.metrics import ApiMetrics
from api.tokens import AccessTokens
from plantnotify.amqp.publisher import JobPublisher
from plantnotify.settings import Settings


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    publisher: JobPublisher
    tokens: AccessTokens
    metrics: ApiMetrics
    # Set after a commit that revoked something: the revocation feed pushes it to the broker.
    revocation_wakeup: threading.Event = field(default_factory=threading.Event)

    def revocations_changed(self) -> None:
        self.revocation_wakeup.set()
