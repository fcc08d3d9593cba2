"""items.claimed_by + items.lease_until: a worker's claim expires, so a dead worker's items return

Revision ID: 0004
Revises: 0005
Create Date: 2026-12-01

Before this, an item left `processing` by a killed worker waited for a 10-minute age sweep. A
claim now names its worker and holds only until `lease_until` (renewed while the batch runs);
the reconciler re-queues an item whose lease ran out. Existing `processing` rows have a NULL
lease, which counts as expired.

(0003 is being added on another branch; when both land, this revision is re-chained after it.)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('lease_until')
        batch_op.drop_column('claimed_by')
