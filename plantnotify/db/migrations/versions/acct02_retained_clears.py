"""accounts: retained MQTT topics of deleted accounts, to be cleared on the broker

Revision ID: acct02
Revises: trace01
Create Date: 2026-12-07 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "acct02"
down_revision = "trace01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retained_clears",
        sa.Column("topic", sa.String(200), primary_key=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_retained_clears_expires_at", "retained_clears", ["expires_at"])


def downgrade() -> None:
    op.drop_table("retained_clears")
