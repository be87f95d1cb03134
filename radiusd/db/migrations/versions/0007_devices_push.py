"""Authenticator app: registered devices and push approval requests.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from radiusd.db.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("enrolment_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False, server_default=""),
        sa.Column("platform", sa.String(32), nullable=False, server_default=""),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.ForeignKeyConstraint(["enrolment_id"], ["otp_enrolments.id"], ondelete="CASCADE",
                                name="fk_devices_enrolment_id_otp_enrolments"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE", name="fk_devices_user_id_users"),
        sa.UniqueConstraint("device_id", name="uq_devices_device_id"),
        sa.UniqueConstraint("enrolment_id", name="uq_devices_enrolment_id"),
        sa.UniqueConstraint("token_hash", name="uq_devices_token_hash"),
    )
    op.create_index("ix_devices_user_id", "devices", ["user_id"])
    op.create_table(
        "push_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("push_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("device_id", sa.Integer, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("number", sa.String(2), nullable=False),
        sa.Column("nas", sa.String(64), nullable=False, server_default=""),
        sa.Column("calling_station_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("description", sa.String(128), nullable=False, server_default=""),
        sa.Column("requested_by", sa.String(64), nullable=True),
        sa.Column("state_hash", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("decided_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_push_requests"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_push_requests_user_id_users"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="SET NULL",
                                name="fk_push_requests_device_id_devices"),
        sa.UniqueConstraint("push_id", name="uq_push_requests_push_id"),
    )
    op.create_index("ix_push_requests_state_hash", "push_requests", ["state_hash"])
    op.create_index("ix_push_requests_expires_at", "push_requests", ["expires_at"])
    op.create_index("ix_push_requests_user_state", "push_requests", ["user_id", "state"])


def downgrade() -> None:
    op.drop_table("push_requests")
    op.drop_table("devices")
