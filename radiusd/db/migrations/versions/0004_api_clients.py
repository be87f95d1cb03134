"""Admin API: OAuth2 API clients and their tokens; remote configuration of SoftOTP apps.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from radiusd.db.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

REMOTE_CONFIG_COLUMNS = (
    sa.Column("pin_required", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("biometric_required", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("config_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("applied_version", sa.Integer, nullable=True),
    sa.Column("last_sync_at", UTCDateTime, nullable=True),
)


def upgrade() -> None:
    op.create_table(
        "api_clients",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("secret_rotated_at", UTCDateTime, nullable=False),
        sa.Column("last_token_at", UTCDateTime, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_api_clients"),
        sa.UniqueConstraint("client_id", name="uq_api_clients_client_id"),
        sa.UniqueConstraint("name", name="uq_api_clients_name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("client_id", sa.Integer, nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(["client_id"], ["api_clients.id"], ondelete="CASCADE",
                                name="fk_api_tokens_client_id_api_clients"),
    )
    op.create_index("ix_api_tokens_client_id", "api_tokens", ["client_id"])
    op.create_index("ix_api_tokens_expires_at", "api_tokens", ["expires_at"])
    with op.batch_alter_table("otp_enrolments") as batch:
        for column in REMOTE_CONFIG_COLUMNS:
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("otp_enrolments") as batch:
        for column in reversed(REMOTE_CONFIG_COLUMNS):
            batch.drop_column(column.name)
    op.drop_table("api_tokens")
    op.drop_table("api_clients")
