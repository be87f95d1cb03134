"""Operators of the web console and their server-side sessions (SPEC §10).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

from radiusd.db.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("secret_encrypted", sa.LargeBinary, nullable=True),
        sa.Column("totp_verified", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_failure_at", UTCDateTime, nullable=True),
        sa.Column("blocked_at", UTCDateTime, nullable=True),
        sa.Column("blocked_until", UTCDateTime, nullable=True),
        sa.Column("block_permanent", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("block_reason", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_login_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_operators"),
        sa.UniqueConstraint("name", name="uq_operators_name"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("operator_id", sa.Integer, nullable=False),
        sa.Column("csrf_hash", sa.String(64), nullable=False),
        sa.Column("mfa_pending", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(45), nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_console_sessions"),
        sa.ForeignKeyConstraint(["operator_id"], ["operators.id"], ondelete="CASCADE",
                                name="fk_console_sessions_operator_id_operators"),
    )
    op.create_index("ix_console_sessions_operator_id", "console_sessions", ["operator_id"])
    op.create_index("ix_console_sessions_last_seen_at", "console_sessions", ["last_seen_at"])


def downgrade() -> None:
    op.drop_table("console_sessions")
    op.drop_table("operators")
