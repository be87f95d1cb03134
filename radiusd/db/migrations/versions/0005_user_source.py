"""Directory users: where a user's password lives ("local" or "ldap").

A directory user's local record (second factors, expiry, blocks) has source "ldap" and no
password hash; existing users are local.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("source", sa.String(8), nullable=False, server_default="local"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("source")
