"""traffic log deletions: deleting an item's embedding reaches the traffic store

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-28

Migration 0006 logs every `item_embeddings` insert; this one logs every delete (and an update as
a delete followed by an insert) as a `traffic_log` row with `deleted` set, from triggers in the
deleting transaction, so `DELETE /v1/items/<id>`, the retention purge and any future path reach
`clipmod.traffic` without knowing about it. Only `traffic_log` gains a column: `item_embeddings`
is not rebuilt, so 0006's insert trigger survives on SQLite. Stores written before this
revision have manifest format 1 and are rebuilt from SQL on their first read, which also drops
items deleted before deletions were logged.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELETE_TRIGGER = 'trg_item_embeddings_traffic_log_delete'
UPDATE_TRIGGER = 'trg_item_embeddings_traffic_log_update'
_LOG = "INSERT INTO traffic_log (item_id, model_revision, deleted) VALUES "


def upgrade() -> None:
    # A plain ALTER TABLE ADD COLUMN, not a batch copy: on SQLite a copy of `traffic_log` would
    # break 0006's trigger, which inserts into it.
    op.add_column(
        'traffic_log', sa.Column('deleted', sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            "CREATE FUNCTION traffic_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {_LOG} (OLD.item_id, OLD.model_revision, true); RETURN OLD; END $$"
        )
        op.execute(
            "CREATE FUNCTION traffic_log_update() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {_LOG} (OLD.item_id, OLD.model_revision, true); "
            f"{_LOG} (NEW.item_id, NEW.model_revision, false); RETURN NEW; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {DELETE_TRIGGER} AFTER DELETE ON item_embeddings "
            "FOR EACH ROW EXECUTE FUNCTION traffic_log_delete()"
        )
        op.execute(
            f"CREATE TRIGGER {UPDATE_TRIGGER} AFTER UPDATE ON item_embeddings "
            "FOR EACH ROW EXECUTE FUNCTION traffic_log_update()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER {DELETE_TRIGGER} AFTER DELETE ON item_embeddings BEGIN "
            f"{_LOG} (OLD.item_id, OLD.model_revision, 1); END"
        )
        op.execute(
            f"CREATE TRIGGER {UPDATE_TRIGGER} AFTER UPDATE ON item_embeddings BEGIN "
            f"{_LOG} (OLD.item_id, OLD.model_revision, 1); "
            f"{_LOG} (NEW.item_id, NEW.model_revision, 0); END"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    for trigger in (DELETE_TRIGGER, UPDATE_TRIGGER):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}" + (" ON item_embeddings" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS traffic_log_delete()")
        op.execute("DROP FUNCTION IF EXISTS traffic_log_update()")
    op.drop_column('traffic_log', 'deleted')  # SQLite >= 3.35 drops a column in place
