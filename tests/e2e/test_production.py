"""The production configuration: PostgreSQL + Redis + a real worker process."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from clipmod.models import Base
from clipmod.runtime import ClipRuntime
from clipmod.settings import Settings
from tests.e2e import scenarios
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_models_match_migrations_on_postgres(production_settings: Settings) -> None:
    engine = create_engine(production_settings.database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_full_path(production_stack: Stack, runtime: ClipRuntime) -> None:
    scenarios.full_path(production_stack, runtime)


def test_hot_reload(production_stack: Stack) -> None:
    scenarios.hot_reload(production_stack)
