"""analyses.request_id: the upload's X-Request-ID, so every part's logs can carry it

Revision ID: ops01
Revises: api01
Create Date: 2026-11-29 11:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = 'ops01'
down_revision = 'api01'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('analyses', sa.Column('request_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column('analyses', 'request_id')
