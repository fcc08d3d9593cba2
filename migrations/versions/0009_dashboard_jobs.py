"""dashboard jobs: a backtest's progress and result live in the database

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28

The editor's backtests ran in the memory of the API process that started them, so with several
replicas a poll that reached another one answered `job_not_found`, and a job whose process died
vanished. A new table only; nothing existing changes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('dashboard_jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Enum('running', 'done', 'failed', name='jobstatus', native_enum=False, length=16), nullable=False),
    sa.Column('phase', sa.String(length=64), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('runner', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_dashboard_jobs_owner_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_jobs'))
    )
    with op.batch_alter_table('dashboard_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dashboard_jobs_owner_id'), ['owner_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dashboard_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dashboard_jobs_owner_id'))
    op.drop_table('dashboard_jobs')
