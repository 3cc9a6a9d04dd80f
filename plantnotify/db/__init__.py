"""PostgreSQL: models, engine/session helpers and Alembic migrations, shared by all services."""
