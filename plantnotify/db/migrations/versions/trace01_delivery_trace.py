"""analyses.trace_id and trace_steps: one trace per analysis and the timeline's own records

Revision ID: trace01
Revises: web01
Create Date: 2026-12-07 00:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = 'trace01'
down_revision = 'web01'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('analyses', sa.Column('trace_id', sa.String(length=32), nullable=True))
    op.create_table(
        'trace_steps',
        sa.Column('id', sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column('analysis_id', sa.String(length=36), nullable=False),
        sa.Column('user_id', sa.String(length=64), nullable=False),
        sa.Column('trace_id', sa.String(length=32), nullable=True),
        sa.Column('step', sa.String(length=32), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('event_id', sa.String(length=64), nullable=True),
        sa.Column('device', sa.String(length=130), nullable=True),
        sa.Column('detail', postgresql.JSONB(), nullable=True),
    )
    op.create_index('ix_trace_steps_analysis_at', 'trace_steps', ['analysis_id', 'at'])
    op.create_index('ix_trace_steps_user_at', 'trace_steps', ['user_id', 'at'])
    op.create_index('ix_trace_steps_at', 'trace_steps', ['at'])
    op.create_index(
        'uq_trace_steps_receipt',
        'trace_steps',
        ['event_id', 'device'],
        unique=True,
        postgresql_where=sa.text("step = 'delivered'"),
        postgresql_nulls_not_distinct=True,
    )


def downgrade() -> None:
    op.drop_table('trace_steps')
    op.drop_column('analyses', 'trace_id')
