"""accounts: login sessions with refresh tokens, revocations, audit log, rate-limit counters

Revision ID: acct01
Revises: ops01
Create Date: 2026-12-07 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "acct01"
down_revision = "ops01"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "user_id", sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("last_used_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revoked_reason", sa.String(32), nullable=True),
        sa.Column("user_agent", sa.String(200), nullable=True),
    )
    op.create_index("ix_auth_sessions_user_id", "auth_sessions", ["user_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(36),
            sa.ForeignKey("auth_sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("spent_at", _TS, nullable=True),
        sa.Column("replaced_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_refresh_tokens_session_id", "refresh_tokens", ["session_id"])
    op.create_table(
        "revocations",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=True),
        sa.Column("not_before", _TS, nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_index("ix_revocations_user_id", "revocations", ["user_id"])
    op.create_index("ix_revocations_expires", "revocations", ["expires_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("detail", postgresql.JSONB, nullable=True),
    )
    op.create_index("ix_audit_log_user_at", "audit_log", ["user_id", "at"])
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("reset_at", _TS, nullable=False),
        sa.Column("blocked_until", _TS, nullable=True),
        sa.Column("strikes", sa.Integer, server_default=sa.text("0"), nullable=False),
    )
    op.create_index("ix_rate_limits_reset", "rate_limits", ["reset_at"])


def downgrade() -> None:
    op.drop_table("rate_limits")
    op.drop_table("audit_log")
    op.drop_table("revocations")
    op.drop_table("refresh_tokens")
    op.drop_table("auth_sessions")
