"""items.content_hash: tell a retried request from new content under a reused external_id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Existing rows keep NULL: their content was never hashed, and the API treats NULL as "unknown",
answering a repeat of their external_id as a replay (the behaviour they were created under).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_hash', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('content_hash')
