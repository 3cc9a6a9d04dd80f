"""What one API app holds: settings and the long-lived clients its routes share."""

from __future__ import annotations

from dataclasses import dataclass

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
