"""Blocking: failure counters and block state on users.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from radiusd.db.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("first_failure_at", UTCDateTime, nullable=True),
    sa.Column("blocked_at", UTCDateTime, nullable=True),
    sa.Column("blocked_until", UTCDateTime, nullable=True),
    sa.Column("block_permanent", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("block_reason", sa.String(255), nullable=False, server_default=""),
)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for column in COLUMNS:
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column.name)
