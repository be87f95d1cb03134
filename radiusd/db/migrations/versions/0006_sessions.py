"""Accounting sessions, and the expiry the sweep last acted on.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from radiusd.db.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("nas", sa.String(64), nullable=False),
        sa.Column("nas_address", sa.String(45), nullable=False),
        sa.Column("session_id", sa.String(253), nullable=False),
        sa.Column("username", sa.String(253), nullable=True),
        sa.Column("nas_ip_address", sa.String(45), nullable=True),
        sa.Column("nas_identifier", sa.String(253), nullable=True),
        sa.Column("nas_port", sa.BigInteger, nullable=True),
        sa.Column("framed_ip_address", sa.String(45), nullable=True),
        sa.Column("calling_station_id", sa.String(253), nullable=True),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("stopped_at", UTCDateTime, nullable=True),
        sa.Column("input_octets", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("output_octets", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("session_time", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stop_cause", sa.String(64), nullable=True),
        sa.Column("interim_interval", sa.Integer, nullable=True),
        sa.Column("stale_after", UTCDateTime, nullable=False),
        sa.Column("disconnect_result", sa.String(16), nullable=True),
        sa.Column("disconnect_error_cause", sa.String(64), nullable=True),
        sa.Column("disconnect_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("nas", "session_id", name="uq_sessions_nas_session_id"),
    )
    op.create_index("ix_sessions_username_status", "sessions", ["username", "status"])
    op.create_index("ix_sessions_status_stale_after", "sessions", ["status", "stale_after"])
    op.create_index("ix_sessions_updated_at", "sessions", ["updated_at"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("expiry_noticed_at", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("expiry_noticed_at")
    op.drop_table("sessions")
