"""Room for what a NAS sends: audit usernames and push Calling-Station-Ids up to 253 characters.

A User-Name or Calling-Station-Id is up to 253 octets (RFC 2865 §5), so at most 253
characters; at 64, PostgreSQL refused the audit row of a long User-Name and the request
went unanswered.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

WIDENED = (("audit_events", "username", True), ("push_requests", "calling_station_id", False))


def upgrade() -> None:
    for table, column, nullable in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.String(253), existing_type=sa.String(64),
                               existing_nullable=nullable)


def downgrade() -> None:
    for table, column, nullable in WIDENED:  # longer values are cut as the server would cut them
        op.execute(sa.text(f"UPDATE {table} SET {column} = substr({column}, 1, 63) || '…' "
                           f"WHERE length({column}) > 64"))
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.String(64), existing_type=sa.String(253),
                               existing_nullable=nullable)
