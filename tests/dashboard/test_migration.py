"""Migration 0003 on a database that already holds decisions from before the dashboard."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from clipmod import migrate
from clipmod.db import make_engine
from tests.conftest import make_settings


def test_existing_decisions_get_the_action_their_labels_imply(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    migrate.upgrade(settings, "0001")
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES (1, 't', '2026-01-01')")
        )
        for item in ("a", "b"):
            conn.execute(
                text(
                    "INSERT INTO items (id, tenant_id, status, attempts, created_at, updated_at)"
                    " VALUES (:i, 1, 'scored', 0, '2026-01-01', '2026-01-01')"
                ),
                {"i": item},
            )
        conn.execute(
            text(
                "INSERT INTO decisions (item_id, moderator, labels, decided_at) VALUES"
                " ('a', 'm', '{\"weapons\": true}', '2026-01-01'),"
                " ('b', 'm', '{\"weapons\": false}', '2026-01-01')"
            )
        )
    migrate.upgrade(settings)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT item_id, action, source FROM decisions ORDER BY item_id"))
        assert rows.all() == [("a", "remove", "legacy"), ("b", "allow", "legacy")]
    engine.dispose()
