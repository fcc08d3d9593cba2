"""Run Alembic migrations programmatically: the only way our schema is made."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from clipmod.bundled import MIGRATIONS
from clipmod.settings import Settings


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    if settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    command.upgrade(alembic_config(settings.database_url), revision)
