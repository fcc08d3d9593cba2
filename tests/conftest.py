"""Shared fixtures: a migrated SQLite database per test, the real bundled model, settings.

Each test gets its own copy of a database that the Alembic migrations built once per session:
real schema, real constraints, full isolation, and no per-test migration cost.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clipmod import keys, migrate
from clipmod import settings as settings_mod
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.policy import versions
from clipmod.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL_DIR = Path(os.environ.get("CLIPMOD_TEST_MODEL", settings_mod.BUNDLED_MODEL))
POLICY_FILE = settings_mod.BUNDLED_POLICY


def make_settings(data_dir: Path, **overrides: str) -> Settings:
    env = {
        "CLIPMOD_DATA_DIR": str(data_dir),
        "CLIPMOD_MODEL": str(MODEL_DIR),
        "CLIPMOD_POLICY": str(POLICY_FILE),
        "CLIPMOD_DEVICE": "cpu",
        "CLIPMOD_POLICY_REFRESH_S": "0",
        "CLIPMOD_BATCH_SIZE": "8",
    }
    env.update({f"CLIPMOD_{k.upper()}": v for k, v in overrides.items()})
    return settings_mod.load(env)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("template")
    migrate.upgrade(make_settings(data_dir))
    return data_dir / "clipmod.db"


@pytest.fixture
def settings(tmp_path: Path, migrated_template: Path) -> Settings:
    shutil.copy(migrated_template, tmp_path / "clipmod.db")
    return make_settings(tmp_path)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings.database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def seeded(settings: Settings, sessions: sessionmaker[Session]) -> int:
    """The bundled demo policy published and active for everyone; returns its version id."""
    with transaction(sessions) as session:
        version = versions.ensure_seeded(
            session, POLICY_FILE.read_text(encoding="utf-8"), source=str(POLICY_FILE)
        )
        return version.id


@pytest.fixture
def api_key(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        return keys.create_key(session, "acme")


@pytest.fixture
def other_key(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        return keys.create_key(session, "globex")


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    from api import create_app

    app = create_app(settings)
    yield app
    join_job_threads()
    app.extensions["clipmod"].engine.dispose()


def join_job_threads(timeout: float = 10) -> None:
    """Wait for the editor's background jobs (`api.dashboard.jobs`) to end. Call it before
    disposing an engine they use: a job still writing would hand its connection back to a
    disposed pool, whose garbage collection closes it later with a ResourceWarning, reported
    in whichever test runs then."""
    from api.dashboard.jobs import THREAD_PREFIX

    for thread in threading.enumerate():
        if thread.name.startswith(THREAD_PREFIX):
            thread.join(timeout)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def runtime():  # type: ignore[no-untyped-def]
    from clipmod.runtime import ClipRuntime

    return ClipRuntime.load(str(MODEL_DIR), "cpu")
