"""Thread references (a Slack thread, an email Message-ID) and their conversation, so
retention can drop them from Redis and a reply to an old thread still finds its customer.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("refs",
                    sa.Column("ref", sa.String(length=600), nullable=False),
                    sa.Column("conversation_id", sa.String(length=64), nullable=False),
                    sa.PrimaryKeyConstraint("ref"))
    op.create_index("ix_refs_conversation", "refs", ["conversation_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_refs_conversation", table_name="refs")
    op.drop_table("refs")
