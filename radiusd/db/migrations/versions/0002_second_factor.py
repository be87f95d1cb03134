"""Second factor: TOTP enrolments, challenge State store, SMS send log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from radiusd.db.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "otp_enrolments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("secret_encrypted", sa.LargeBinary, nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("enrolled_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("verified_at", UTCDateTime, nullable=True),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("activation_code_hash", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_otp_enrolments"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_otp_enrolments_user_id_users"),
        sa.UniqueConstraint("user_id", name="uq_otp_enrolments_user_id"),
        sa.UniqueConstraint("activation_code_hash", name="uq_otp_enrolments_activation_code_hash"),
    )
    op.create_table(
        "challenges",
        sa.Column("state_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("nas", sa.String(64), nullable=False),
        sa.Column("factor", sa.String(16), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name="pk_challenges"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_challenges_user_id_users"),
    )
    op.create_index("ix_challenges_user_id", "challenges", ["user_id"])
    op.create_index("ix_challenges_expires_at", "challenges", ["expires_at"])
    op.create_table(
        "sms_messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("sent_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sms_messages"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_sms_messages_user_id_users"),
    )
    op.create_index("ix_sms_messages_user_sent", "sms_messages", ["user_id", "sent_at"])


def downgrade() -> None:
    op.drop_table("sms_messages")
    op.drop_table("challenges")
    op.drop_table("otp_enrolments")
