"""The models and the migrations must describe the same schema (like `alembic check`)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from clipmod.models import Base


def test_models_match_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], "run `make migration m='...'` to capture model changes"


def test_the_traffic_log_trigger_exists_at_head(engine: Engine) -> None:
    """Alembic's SQLite batch mode rebuilds a table without its triggers: a later migration
    that alters `item_embeddings` must create the triggers again (see migrations 0006, 0008)."""
    with engine.connect() as conn:
        names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert {
            "trg_item_embeddings_traffic_log",
            "trg_item_embeddings_traffic_log_delete",  # migration 0008: deletions reach the store
            "trg_item_embeddings_traffic_log_update",
        } <= {row[0] for row in names}
