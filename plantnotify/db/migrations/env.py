from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from plantnotify.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            # Serialise concurrent `migrate` runs (several services starting at once).
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(746911)")
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `plantnotify migrate`")
run_migrations_online()
