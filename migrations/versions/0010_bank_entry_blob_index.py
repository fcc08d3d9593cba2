"""bank entries: index the blob digest

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29

Deleting an item, and the blob sweep, now ask whether a bank entry still names a blob (an
uploaded bank image is kept to embed it again for another model), so that question needs an
index like the items' one. An index only; nothing existing changes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('bank_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bank_entries_image_sha256'), ['image_sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('bank_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bank_entries_image_sha256'))
