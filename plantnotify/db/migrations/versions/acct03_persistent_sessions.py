"""accounts: persistent MQTT sessions per user, so the API can cap them

Revision ID: acct03
Revises: acct02
Create Date: 2026-12-07 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "acct03"
down_revision = "acct02"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mqtt_persistent_sessions",
        sa.Column("client_id", sa.String(130), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_mqtt_persistent_sessions_user_opened",
        "mqtt_persistent_sessions",
        ["user_id", "opened_at"],
    )


def downgrade() -> None:
    op.drop_table("mqtt_persistent_sessions")
