"""outbox wake-up and state

Every INSERT into ``events`` sends ``NOTIFY plantnotify_events`` (delivered at commit), so the
outbox publisher in whichever worker process leads is woken at once; ``outbox_state`` remembers
the broker boot whose retained state was rebuilt.

Revision ID: worker01
Revises: bridge01
Create Date: 2026-11-29 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "worker01"
down_revision = "bridge01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_state",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key"),
    )
    op.execute(
        """
        CREATE FUNCTION plantnotify_events_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('plantnotify_events', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_notify AFTER INSERT ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION plantnotify_events_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
    op.execute("DROP FUNCTION IF EXISTS plantnotify_events_notify()")
    op.drop_table("outbox_state")
