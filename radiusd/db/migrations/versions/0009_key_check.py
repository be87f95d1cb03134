"""The seed key's check value: the keyed-digest key, sealed with the seed key.

A seed key that does not open it is refused at start-up and by ``check-config`` (before,
a different valid key passed and failed later, on the first seed it read). Written by
``radiusd-admin db upgrade`` (or the first process to open the database with a key that
decrypts what is stored); re-sealed by ``radiusd-admin db rotate-seed-key``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

from radiusd.db.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_checks",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_key_checks"),
    )


def downgrade() -> None:
    op.drop_table("key_checks")
