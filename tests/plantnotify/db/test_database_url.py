"""DATABASE_URL in the form every PostgreSQL user writes (``postgresql://…``) works, against the
real PostgreSQL, as well as the form naming the driver."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from plantnotify.db.session import make_engine, migrate
from plantnotify.settings import Settings, normalize_database_url


def _forms(database_url: str) -> dict[str, str]:
    url = make_url(database_url)
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return {
        "plain": plain,
        "short": "postgres://" + plain.partition("://")[2],
        "driver": url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False),
    }


@pytest.mark.parametrize("form", ["plain", "short", "driver"])
def test_every_form_reaches_the_database(
    form: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _forms(database_url)[form]
    monkeypatch.setenv("DATABASE_URL", url)
    settings = Settings()
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            name = conn.execute(text("SELECT current_database()")).scalar()
    finally:
        engine.dispose()
    assert name == make_url(database_url).database
    migrate(url)  # the services' start-up path (create if missing, upgrade) takes it as well


def test_a_named_driver_is_kept() -> None:
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_database_url("postgres://u:p@h:5/db") == "postgresql+psycopg2://u:p@h:5/db"
    assert normalize_database_url("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert normalize_database_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"
