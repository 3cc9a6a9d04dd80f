"""api: analyses.queued_at (set once RabbitMQ confirmed the job)

A Processing analysis without queued_at is one whose job was never confirmed (the API stopped
between its commit and the publisher confirm); the API's requeue sweep publishes it. Rows that
exist already were queued (or failed) long ago: they get queued_at = created_at.

Revision ID: api01
Revises: worker01
Create Date: 2026-11-29 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "api01"
down_revision = "worker01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("analyses", sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE analyses SET queued_at = created_at")
    op.create_index(
        "ix_analyses_unqueued",
        "analyses",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'Processing' AND queued_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_analyses_unqueued",
        table_name="analyses",
        postgresql_where=sa.text("status = 'Processing' AND queued_at IS NULL"),
    )
    op.drop_column("analyses", "queued_at")
