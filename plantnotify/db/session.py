"""Engine and session helpers, database creation and migration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from plantnotify.settings import normalize_database_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# A pooled connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def make_engine(database_url: str, *, pool_size: int = 10, autocommit: bool = False) -> Engine:
    """A pooled engine. ``autocommit``: every statement is its own transaction, and handing a
    connection back costs no round trip (``execution_options(isolation_level="AUTOCOMMIT")``
    on an ordinary engine sends a ``SET default_transaction_isolation`` each time)."""
    engine = create_engine(
        normalize_database_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        future=True,
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )
    ping_after_idle(engine, PING_AFTER_IDLE_SECONDS)
    return engine


def ping_after_idle(engine: Engine, idle_seconds: float) -> None:
    """Pre-ping a pooled connection only when it sat unused for ``idle_seconds``.

    SQLAlchemy's ``pool_pre_ping`` costs a round trip on every checkout: on the worker's path
    that is one extra round trip before each claim, progress stage and result commit (measured
    by the bench's ``realpath`` stages). A connection that was used a moment ago is alive; one
    that sat idle (across a PostgreSQL restart, say) is pinged, and a dead one is replaced
    before anyone sees it (the pool retries the checkout on ``DisconnectionError``)."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


@lru_cache(maxsize=8)
def engine_for(database_url: str) -> Engine:
    """One engine per URL per process."""
    return make_engine(database_url)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, future=True)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with factory() as session, session.begin():
        yield session


def commit_without_flush_wait(session: Session) -> None:
    """This transaction's commit does not wait for the WAL flush (``synchronous_commit`` off,
    for this transaction only). Only for writes that are re-derived if a PostgreSQL crash loses
    them; a later synchronous commit also flushes every earlier one."""
    session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def commit_with_flush_wait(session: Session) -> None:
    """Undo :func:`commit_without_flush_wait` for this transaction: it became one whose loss in
    a PostgreSQL crash would matter."""
    session.execute(text("SET LOCAL synchronous_commit TO ON"))


def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL when it does not exist; True if created."""
    url = make_url(normalize_database_url(database_url))
    name = url.database
    if not name:
        raise ValueError("DATABASE_URL names no database")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        admin.dispose()


def drop_database(database_url: str) -> None:
    url = make_url(normalize_database_url(database_url))
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(url.database or "")
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%"))
    return cfg


def migrate(database_url: str) -> None:
    """Create the database if needed and bring its schema to the newest migration."""
    ensure_database(database_url)
    command.upgrade(alembic_config(database_url), "head")
